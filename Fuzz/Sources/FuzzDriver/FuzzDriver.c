// The header is the whole module: this file only gives the C target something to compile.
#include "FuzzDriver.h"

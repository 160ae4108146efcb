// Counts a process's heap allocations when preloaded (LD_PRELOAD) into it; see AllocationCounter.c.
// Nothing here is meant to be called: the library works by replacing malloc and its kin.

#ifndef C_MALLOC_INFO_H
#define C_MALLOC_INFO_H

#include <stddef.h>

/// Bytes the C allocator has handed out and not yet taken back (glibc's
/// mallinfo2: in-use chunks plus mmapped blocks); 0 where that is unknown.
size_t presence_heap_bytes_in_use(void);

#endif

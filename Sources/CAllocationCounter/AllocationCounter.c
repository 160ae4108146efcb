// Counts every heap allocation of a process it is preloaded into (LD_PRELOAD), for the tests that
// pin allocations per request (Tests/allocation-thresholds.json). The count lives in a shared
// mapping of the file named by PRESENCE_ALLOCATION_COUNTER, so the test reads it from outside at
// any moment; the allocations themselves go to glibc's own functions unchanged.
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t count, size_t size);
extern void *__libc_realloc(void *pointer, size_t size);
extern void *__libc_memalign(size_t alignment, size_t size);

// Null until the constructor has mapped the file: allocations before that are not counted.
static _Atomic long long *counter;

__attribute__((constructor)) static void presence_allocation_counter_setup(void) {
    const char *path = getenv("PRESENCE_ALLOCATION_COUNTER");
    if (path == NULL) return;
    int descriptor = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (descriptor < 0) return;
    if (ftruncate(descriptor, 4096) != 0) {
        close(descriptor);
        return;
    }
    void *mapping = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, descriptor, 0);
    close(descriptor);
    if (mapping != MAP_FAILED) counter = mapping;
}

static inline void count(void) {
    _Atomic long long *current = counter;
    if (current != NULL) atomic_fetch_add_explicit(current, 1, memory_order_relaxed);
}

void *malloc(size_t size) {
    count();
    return __libc_malloc(size);
}

void *calloc(size_t count_, size_t size) {
    count();
    return __libc_calloc(count_, size);
}

void *realloc(void *pointer, size_t size) {
    count();
    return __libc_realloc(pointer, size);
}

void *memalign(size_t alignment, size_t size) {
    count();
    return __libc_memalign(alignment, size);
}

void *aligned_alloc(size_t alignment, size_t size) {
    count();
    return __libc_memalign(alignment, size);
}

int posix_memalign(void **result, size_t alignment, size_t size) {
    count();
    void *pointer = __libc_memalign(alignment, size);
    if (pointer == NULL) return 12;  // ENOMEM
    *result = pointer;
    return 0;
}

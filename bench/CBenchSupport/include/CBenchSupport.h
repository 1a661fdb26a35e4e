#ifndef CONVEY_CBENCHSUPPORT_H
#define CONVEY_CBENCHSUPPORT_H
/*
 * Benchmark-only support code in C.
 *
 * Allocation counting: this target defines malloc, calloc, realloc, aligned_alloc,
 * posix_memalign and memalign, counts each call, and forwards it to glibc's own allocator
 * (__libc_malloc and friends). Linked into the ConveyBench executable only, the dynamic linker
 * binds every library's malloc (the Swift runtime's included) to these definitions, so the
 * counter sees every heap allocation in the process. Never link this into convey itself.
 */
#include <stdint.h>

/* Heap allocations (not frees) made by any thread since the process started. */
uint64_t cb_allocation_count(void);

/* Heap allocations made by the calling thread since it started: what a measurement on one
 * thread wants when other threads (tests running in parallel) allocate meanwhile. */
uint64_t cb_thread_allocation_count(void);

#endif

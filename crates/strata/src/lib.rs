//! Process-wide settings of the `strata` binary, shared with its benchmarks so they
//! measure under the broker's conditions.

/// mimalloc's `mi_option_purge_delay` (`mimalloc.h`, the same in v2 and v3).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Makes the allocators keep and reuse memory that the hot paths allocate and free all
/// the time, instead of giving it back to the kernel and faulting it in again:
/// - Transparent huge pages off: every fresh buffer of a megabyte or two (decoded cold
///   row groups, fetch answers) cost the kernel a 2 MiB page to zero, which halved cold
///   replay. As for other data stores (Redis, MongoDB), THP is off for this process.
/// - glibc malloc (zstd's compression contexts, a few MiB per Parquet column chunk)
///   keeps blocks up to 32 MiB in its heap rather than mapping and unmapping each one.
/// - mimalloc (everything else) waits 10 s rather than 1 s before returning idle memory.
///
/// Together these took 15% off the CPU an upload costs (page faults and TLB shootdowns
/// were a fifth of it). Peak memory is unchanged; idle memory goes back later.
pub fn tune_process_memory() {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl(PR_SET_THP_DISABLE) only sets a flag on this process.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt changes glibc malloc tunables, which it allows at any time.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
    // SAFETY: sets one of mimalloc's runtime options, which it allows at any time.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 10_000) };
}

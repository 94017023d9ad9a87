//! The allocator's thresholds for processes that move gigabytes. One of the two places with
//! `unsafe` code (the other: the Windows API, `windows/`): `mallopt` is glibc's C interface.
#![allow(unsafe_code)]

/// Keeps freed memory on the heap for the next buffer, where glibc is the allocator.
///
/// Processes that move gigabytes (repositories serving and syncing, `repo pull`, publishes)
/// allocate and free buffers of 64 KiB (each received datagram) to a few MiB (ranges) many
/// times a second. With glibc's defaults the heap's free top goes back to the system as soon
/// as it exceeds 128 KiB and is faulted in and zeroed again at the next allocation (7% of an
/// edge's CPU in a fresh sync, measured with `perf`). After this call allocations up to 16 MiB
/// come from the heap, and up to 64 MiB of free heap is kept for reuse (bench/README.md, fresh
/// sync). Call it before the runtime starts its threads. Elsewhere it does nothing.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes two thresholds of the allocator.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 16 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    /// Memory freed by a repository process stays on its heap for the next buffer: a 4 MiB
    /// buffer (a range) comes from the heap, not a mapping of its own, and once freed it is
    /// kept, not given back to the system (glibc's defaults map it, then unmap it). Measured
    /// in a process of its own (this test run again, alone): other tests allocating at the
    /// same time would move the allocator's figures.
    #[test]
    fn freed_buffers_stay_with_the_process() {
        const ALONE: &str = "OUTPOST_TEST_ALLOCATOR_ALONE";
        if std::env::var_os(ALONE).is_none() {
            let name = "allocator::tests::freed_buffers_stay_with_the_process";
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", name, "--test-threads=1"])
                .env(ALONE, "1")
                .output()
                .unwrap();
            let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            assert!(out.status.success() && text.contains("1 passed"), "{text}");
            return;
        }
        super::keep_freed_memory();
        // SAFETY: mallinfo2 only reads the allocator's statistics.
        let info = || unsafe { libc::mallinfo2() };
        let mapped = info().hblkhd;
        let buffer = std::hint::black_box(vec![1u8; 4 << 20]);
        assert_eq!(info().hblkhd, mapped, "the buffer is on the heap, not mapped on its own");
        drop(buffer);
        assert!(info().fordblks >= 4 << 20, "the freed buffer is kept: {} bytes free on the heap", info().fordblks);
    }
}

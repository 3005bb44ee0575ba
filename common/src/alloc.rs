//! The binaries' allocator setting, shared: mimalloc with arenas committed
//! lazily and freed memory given back after 100 ms (the agent) or at once
//! (the collector, `purge_delay_ms = 0`: see its `main.rs`).
//!
//! mimalloc (v3) commits its arenas eagerly by default on Linux, and memory
//! committed that way stays resident: a process whose live heap is a few MiB
//! keeps its heap's high-water mark. Measured: the agent held 27 of 38 MiB
//! that way (4.5 MiB with lazy commit, for the same CPU,
//! `benches/agent_node.rs`); a gateway collector forwarding 10,000 series/s
//! held 87–97 MiB of anonymous memory, 37–41 MiB with lazy commit
//! (`tests/benches/forward.rs`).
//!
//! mimalloc v3 also keeps freed memory for a second (ten in its arenas)
//! before giving it back; the agent draining a 1 GiB log backlog peaked at
//! 62–65 MiB that way, 44–48 MiB with a 100 ms delay, for the same CPU
//! (226 vs 223–225 MiB per CPU-second; 10 ms cost 6% of it, 0 ms 22%;
//! `tests/benches/logs_pipeline.rs`).
//!
//! Both options are set here and win over `MIMALLOC_*` variables.
//! The options must be set before mimalloc reserves its first arena — before
//! the Rust runtime's first allocation — so [`mimalloc_lazy_commit!`]
//! declares, in the binary itself, a constructor that runs ahead of the
//! default ones (a `#[used]` static in a library may be left out by the
//! linker).

/// In a binary's root: mimalloc as the global allocator, its arenas
/// committed lazily and its purge delay 100 ms, or the one given as
/// `purge_delay_ms = N` (see the module's documentation).
#[macro_export]
macro_rules! mimalloc_lazy_commit {
    () => {
        $crate::mimalloc_lazy_commit!(purge_delay_ms = 100);
    };
    (purge_delay_ms = $delay:expr) => {
        #[global_allocator]
        static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

        // mimalloc's own option call (its C API; the symbol is in the
        // allocator the binary links).
        #[allow(unsafe_code)]
        unsafe extern "C" {
            fn mi_option_set(option: ::std::ffi::c_int, value: ::std::ffi::c_long);
        }

        extern "C" fn mimalloc_lazy_arena_commit() {
            /// `mi_option_arena_eager_commit` and `mi_option_purge_delay`
            /// in mimalloc's `mi_option_e`.
            const ARENA_EAGER_COMMIT: ::std::ffi::c_int = 4;
            const PURGE_DELAY: ::std::ffi::c_int = 15;
            // SAFETY: sets two integer options of the allocator this binary
            // links; nothing here allocates (that would start mimalloc
            // before the options)
            #[allow(unsafe_code)]
            unsafe {
                mi_option_set(ARENA_EAGER_COMMIT, 0);
                mi_option_set(PURGE_DELAY, $delay);
            };
        }

        #[used]
        #[allow(unsafe_code)]
        #[unsafe(link_section = ".init_array.00100")]
        static MIMALLOC_LAZY_ARENA_COMMIT: extern "C" fn() = mimalloc_lazy_arena_commit;
    };
}

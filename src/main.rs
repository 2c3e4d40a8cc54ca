//! The `orchestra-export` binary: parse flags, run, exit with a documented code.

/// mimalloc instead of glibc's allocator: flattening allocates many small values on several
/// threads at once, where glibc's arenas spent a quarter of the CPU time (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(orchestra_export::cli::run());
}

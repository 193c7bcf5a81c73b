//! The README's complete example is `examples/in_memory_queue.rs` (which is compiled with the
//! tests); the README's copy is compiled as a doc test. They must not drift apart.

#![allow(clippy::unwrap_used, reason = "a test fails by panicking")]

#[test]
fn the_readme_example_is_the_example_file() {
    let readme = include_str!("../README.md");
    let example = include_str!("../examples/in_memory_queue.rs");
    let start = readme.find("```rust,no_run\n").unwrap() + "```rust,no_run\n".len();
    let end = start + readme[start..].find("```").unwrap();
    let code = example
        .find("use std::time::Duration;")
        .map(|i| &example[i..])
        .unwrap();
    assert_eq!(
        &readme[start..end],
        code,
        "README.md's example differs from examples/in_memory_queue.rs (after its header comment)"
    );
}

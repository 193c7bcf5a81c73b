//! What happens to an object between the request and the store: decoding, pruning, defaulting
//! and validation, for built-in and custom types.

pub mod builtin;
pub mod custom;

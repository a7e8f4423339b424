//! `strata build`: images from a Containerfile.
//!
//! - [`parse`]: the Containerfile grammar (directives, continuations, heredocs, flags, forms).
//! - [`expand`]: ARG/ENV expansion of a word, as buildkit's shell lexer does it.

pub mod expand;
pub mod parse;

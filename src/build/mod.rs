//! `strata build`: images from a Containerfile.
//!
//! - [`parse`]: the Containerfile grammar (directives, continuations, heredocs, flags, forms).
//! - [`context`]: the build context, its ignore file, COPY sources and their cache digest.
//! - [`expand`]: ARG/ENV expansion of a word, as buildkit's shell lexer does it.

pub mod context;
pub mod expand;
pub mod parse;

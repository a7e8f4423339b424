//! Parts of the `strata` command line that are not argument parsing: the library reports,
//! these modules draw.

pub mod progress;
pub mod table;

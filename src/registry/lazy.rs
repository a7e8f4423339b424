//! A seekable layer's TOC from a registry, by ranges (the first step of `pull --lazy`): the
//! descriptor tells whether the layer is seekable ([`seekable::locate`]); eStargz's tail is read
//! in one request that usually holds the footer and the whole TOC (a second one fetches the
//! rest of a bigger TOC); zstd:chunked's TOC range comes from its annotation. The TOC is
//! verified against the descriptor before anything in it is used.

use std::collections::HashMap;

use super::{Client, RegistryError};
use crate::seekable::footer::{estargz_toc_range, parse_estargz_footer, ESTARGZ_FOOTER_SIZE};
use crate::seekable::{self, Locator, Toc};

/// Bytes read from the end of an eStargz blob in the first request: the footer and, for most
/// layers, the whole TOC.
pub const TAIL_GUESS: u64 = 256 << 10;

/// A verified TOC and what fetching it cost.
#[derive(Debug)]
pub struct RemoteToc {
    pub locator: Locator,
    pub toc: Toc,
    /// Bytes of the blob fetched (footer and TOC).
    pub fetched: u64,
}

/// The TOC of blob `digest` (`size` bytes, of `media_type`, with the descriptor's
/// `annotations`), fetched by ranges and verified; `None` when the layer is not seekable.
pub fn fetch_toc(
    client: &Client,
    digest: &str,
    size: u64,
    media_type: &str,
    annotations: &HashMap<String, String>,
) -> Result<Option<RemoteToc>, RegistryError> {
    let what = format!("layer {digest}");
    let bad = |e: seekable::SeekableError| RegistryError::Invalid {
        what: what.clone(),
        reason: crate::error::report(&e),
    };
    let Some(locator) = seekable::locate(media_type, annotations, size).map_err(bad)? else {
        return Ok(None);
    };
    let (toc, fetched) = match &locator {
        Locator::Estargz { toc_digest } => {
            let tail_start = size.saturating_sub(TAIL_GUESS.max(ESTARGZ_FOOTER_SIZE));
            let tail = client.blob_range(digest, tail_start..size)?;
            let footer = &tail[tail.len() - ESTARGZ_FOOTER_SIZE as usize..];
            let toc_offset = parse_estargz_footer(footer).map_err(bad)?;
            let range = estargz_toc_range(size, toc_offset).map_err(bad)?;
            let mut fetched = tail.len() as u64;
            let member = if range.start >= tail_start {
                tail[(range.start - tail_start) as usize..(range.end - tail_start) as usize].to_vec()
            } else {
                // A TOC bigger than the first read: its head, then what was read already.
                let mut head = client.blob_range(digest, range.start..tail_start)?;
                fetched += head.len() as u64;
                head.extend_from_slice(&tail[..(range.end - tail_start) as usize]);
                head
            };
            (Toc::from_estargz(&member, toc_offset, toc_digest).map_err(bad)?, fetched)
        }
        Locator::ZstdChunked { offset, length, .. } => {
            let frame = client.blob_range(digest, *offset..offset + length)?;
            (Toc::from_zstd_chunked(&frame, &locator).map_err(bad)?, frame.len() as u64)
        }
    };
    tracing::info!(
        layer = digest,
        format = locator.format().as_str(),
        entries = toc.entries.len(),
        fetched,
        "TOC verified"
    );
    Ok(Some(RemoteToc { locator, toc, fetched }))
}

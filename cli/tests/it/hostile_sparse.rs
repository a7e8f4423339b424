//! Hostile sparse maps: old GNU sparse entries and PAX sparse ones (0.0, 0.1, 1.0) whose maps are
//! out of order, overlap, reach past the real size, disagree with their data, do not parse or
//! never end, and seeded random mutations of sparse tars. Each case unpacks next to the sentinel
//! tree of [`super::hostile`] and asserts nothing outside the root changed and the error names the
//! entry.

use crate::common::tarw as common;

use std::fs;

use super::hostile::{corrupt, env, env_fresh, invalid_path, unpack_mutant, Env};
use common::{fix_cksum, gnu_sparse_headers, num12, pax_sparse, slot, sparse_v10_data, tar, E, T};
use strata::unpack::{unpack_layer, UnpackError, UnpackOptions, UnpackStats, MAX_HEADER_BYTES};

/// Assert an [`UnpackError::Sparse`] naming `path` with `reason` in its message, and that the
/// entry was not created.
fn sparse_err(env: &Env, r: Result<UnpackStats, UnpackError>, path: &str, reason: &str) {
    match r {
        Err(e @ UnpackError::Sparse { .. }) => {
            assert_eq!(e.path(), Some(path), "{e}");
            let msg = e.to_string();
            assert!(msg.contains(&format!("{path:?}")) && msg.contains(reason), "{msg}");
        }
        other => panic!("expected a sparse error for {path:?} ({reason}), got {other:?}"),
    }
    assert!(fs::symlink_metadata(env.d(path)).is_err(), "{path} was created");
}

/// An old GNU sparse entry `f` with these slots, real size and data, then an ordinary entry.
fn gnu_tar(slots: &[[u8; 24]], realsize: u64, data: &[u8]) -> Vec<u8> {
    let mut t = T::new();
    t.raw(&gnu_sparse_headers(b"f", slots, realsize, data.len() as u64));
    t.raw(data);
    t.raw(&vec![0u8; (512 - data.len() % 512) % 512]);
    t.add(E::file("after", "x"));
    t.finish()
}

#[test]
fn gnu_sparse_out_of_order_or_overlapping() {
    // The tar crate refuses these while reading headers; the error still names the entry.
    let env = env();
    let r = env.run(&gnu_tar(&[slot(8192, 512), slot(0, 512)], 8704, &[1u8; 1024]));
    sparse_err(&env, r, "f", "overlaps or precedes");
    let env = env_fresh();
    let r = env.run(&gnu_tar(&[slot(0, 1024), slot(512, 512)], 1024, &[1u8; 1536]));
    sparse_err(&env, r, "f", "overlaps or precedes");
}

#[test]
fn gnu_sparse_extent_past_real_size() {
    let env = env();
    let r = env.run(&gnu_tar(&[slot(0, 512), slot(4096, 512)], 1000, &[1u8; 1024]));
    sparse_err(&env, r, "f", "past the real size 1000");
    // A map ending before the real size: old GNU maps end at it.
    let env = env_fresh();
    let r = env.run(&gnu_tar(&[slot(0, 512)], 4096, &[1u8; 512]));
    sparse_err(&env, r, "f", "not at the real size 4096");
}

#[test]
fn gnu_sparse_map_longer_than_data() {
    // The map lists 1024 data bytes, the header (and the archive) hold 512.
    let env = env();
    let mut t = T::new();
    t.raw(&gnu_sparse_headers(b"f", &[slot(0, 512), slot(4096, 512)], 4608, 512));
    t.raw(&[1u8; 512]);
    t.add(E::file("after", "x"));
    sparse_err(&env, env.run(&t.finish()), "f", "lists 1024 bytes of data, the entry holds 512");
}

#[test]
fn gnu_sparse_numbers_that_do_not_parse() {
    let env = env();
    let mut bad = slot(0, 512);
    bad[..12].copy_from_slice(b"0000000x000\0");
    let r = env.run(&gnu_tar(&[bad], 512, &[1u8; 512]));
    sparse_err(&env, r, "f", "sparse slot 0 offset");
    // Base-256 with high bytes the tar crate ignores: refused rather than read truncated.
    let env = env_fresh();
    let mut bad = slot(0, 512);
    bad[12..24].copy_from_slice(&num12(1 << 40));
    bad[13] = 1;
    let r = env.run(&gnu_tar(&[bad], 1 << 41, &[1u8; 512]));
    sparse_err(&env, r, "f", "base-256 number out of range");
    // A real size beyond the largest file offset.
    let env = env_fresh();
    let r = env.run(&gnu_tar(&[slot(0, 512), slot(1 << 63, 0)], 1 << 63, &[1u8; 512]));
    sparse_err(&env, r, "f", "beyond the largest file size");
}

#[test]
fn gnu_sparse_malformed_slots() {
    // A half-empty slot: the tar crate skips it, GNU tar stops at it.
    let env = env();
    let mut half = slot(4096, 512);
    half[0] = 0;
    let r = env.run(&gnu_tar(&[slot(0, 512), half, slot(8192, 0)], 8192, &[1u8; 512]));
    sparse_err(&env, r, "f", "sparse slot 1 is half empty");
    // A slot after an empty one.
    let env = env_fresh();
    let mut t = T::new();
    let mut h = gnu_sparse_headers(b"f", &[slot(0, 512), [0u8; 24], slot(8192, 0)], 8192, 512);
    h.truncate(512);
    fix_cksum(&mut h);
    t.raw(&h).raw(&[1u8; 512]);
    t.add(E::file("after", "x"));
    sparse_err(&env, env.run(&t.finish()), "f", "sparse slot 2 follows an empty slot");
}

#[test]
fn gnu_sparse_extension_block_missing() {
    // isextended announces a block the stream does not have.
    let env = env();
    let slots: Vec<_> = (0..6).map(|i| slot(i * 4096, 512)).collect();
    let mut h = gnu_sparse_headers(b"f", &slots, 6 * 4096, 3072);
    h.truncate(512);
    sparse_err(&env, env.run(&h), "f", "extended sparse header 1 missing");
}

#[test]
fn gnu_sparse_endless_extension_blocks() {
    // 20,000 extension blocks (10 MB of map): bounded by the header data limit.
    let env = env();
    let slots: Vec<_> = (0..4 + 21 * 20_000u64).map(|i| slot(i * 512, 512)).collect();
    let n = slots.len() as u64;
    let mut t = T::new();
    t.raw(&gnu_sparse_headers(b"f", &slots, n * 512, n * 512));
    match env.run(&t.finish()) {
        Err(e @ UnpackError::HeaderTooLarge { .. }) => {
            assert!(e.to_string().contains(&MAX_HEADER_BYTES.to_string()), "{e}")
        }
        other => panic!("expected HeaderTooLarge, got {other:?}"),
    }
}

#[test]
fn gnu_sparse_with_pax_sparse_records() {
    let env = env();
    let mut t = T::new();
    t.pax_header(&[("GNU.sparse.size".into(), b"99999".to_vec())]);
    t.raw(&gnu_sparse_headers(b"f", &[slot(0, 512)], 512, 512)).raw(&[1u8; 512]);
    sparse_err(&env, env.run(&t.finish()), "f", "old GNU sparse entry with PAX size or GNU.sparse records");
}

/// A PAX sparse entry `e` then an ordinary one.
fn pax_tar(e: E) -> Vec<u8> {
    tar([e, E::file("after", "x")])
}

#[test]
fn pax_sparse_out_of_order_or_past_real_size() {
    let env = env();
    let r = env.run(&pax_tar(pax_sparse("0.1", "f", &[(8192, 512), (0, 512)], 9000)));
    sparse_err(&env, r, "f", "overlaps or precedes");
    let env = env_fresh();
    let r = env.run(&pax_tar(pax_sparse("0.0", "f", &[(0, 1024), (512, 512)], 9000)));
    sparse_err(&env, r, "f", "overlaps or precedes");
    let env = env_fresh();
    let r = env.run(&pax_tar(pax_sparse("1.0", "f", &[(0, 512), (4096, 512)], 1000)));
    sparse_err(&env, r, "f", "past the real size 1000");
}

#[test]
fn pax_sparse_map_and_data_disagree() {
    // 0.1: the map lists 1024 bytes, the entry holds 512.
    let env = env();
    let mut e = pax_sparse("0.1", "f", &[(0, 512), (4096, 512)], 8192);
    e.data.truncate(512);
    sparse_err(&env, env.run(&pax_tar(e)), "f", "lists 1024 bytes of data, the entry holds 512");
    // 1.0: the map itself runs past the entry data.
    let env = env_fresh();
    let ext: Vec<(u64, u64)> = (0..100).map(|i| (i * 4096, 512)).collect();
    let mut e = pax_sparse("1.0", "f", &ext, 100 * 4096);
    e.data.truncate(512);
    sparse_err(&env, env.run(&pax_tar(e)), "f", "sparse map is longer than the entry data");
    // 1.0: an extent that is not a multiple of 512 bytes before another one (readers that pad
    // each extent and readers that do not would see different files).
    let env = env_fresh();
    let r = env.run(&pax_tar(pax_sparse("1.0", "f", &[(0, 100), (4096, 512)], 8192)));
    sparse_err(&env, r, "f", "not a multiple of 512");
}

#[test]
fn pax_sparse_absurd_numbers_of_extents() {
    // 1.0: a count of 10^18 extents is refused before anything is allocated for it.
    let env = env();
    let mut e = pax_sparse("1.0", "f", &[], 4096);
    e.data = b"1000000000000000000\n".to_vec();
    e.data.resize(512, 0);
    sparse_err(&env, env.run(&pax_tar(e)), "f", "sparse map of 1000000000000000000 extents");
    // 0.1: GNU.sparse.numblocks disagreeing with the map.
    let env = env_fresh();
    let mut e = pax_sparse("0.1", "f", &[(0, 512)], 4096);
    for (k, v) in &mut e.pax {
        if k == "GNU.sparse.numblocks" {
            *v = b"4000000000".to_vec();
        }
    }
    sparse_err(&env, env.run(&pax_tar(e)), "f", "GNU.sparse.numblocks is 4000000000, the map has 1 extents");
}

#[test]
fn pax_sparse_numbers_that_do_not_parse() {
    let env = env();
    let e = E::file("GNUSparseFile.0/f", [1u8; 512])
        .pax("GNU.sparse.size", "4096")
        .pax("GNU.sparse.name", "f")
        .pax("GNU.sparse.map", "0,0x200");
    sparse_err(&env, env.run(&pax_tar(e)), "f", "GNU.sparse.map size: \"0x200\" is not a number");
    let env = env_fresh();
    let e = E::file("f", [1u8; 512])
        .pax("GNU.sparse.size", "-1")
        .pax("GNU.sparse.offset", "0")
        .pax("GNU.sparse.numbytes", "512");
    sparse_err(&env, env.run(&pax_tar(e)), "f", "GNU.sparse.size: \"-1\" is not a number");
    let env = env_fresh();
    let mut e = pax_sparse("1.0", "f", &[(0, 512)], 4096);
    e.data[2..5].copy_from_slice(b" 0\n");
    sparse_err(&env, env.run(&pax_tar(e)), "f", "is not a number");
    let env = env_fresh();
    let e = E::file("f", [1u8; 512])
        .pax("GNU.sparse.size", "99999999999999999999")
        .pax("GNU.sparse.map", "0,512");
    sparse_err(&env, env.run(&pax_tar(e)), "f", "out of range");
}

#[test]
fn pax_sparse_real_size_disagreements() {
    let env = env();
    let e = pax_sparse("0.1", "f", &[(0, 512)], 4096).pax("GNU.sparse.realsize", "8192");
    sparse_err(&env, env.run(&pax_tar(e)), "f", "GNU.sparse.size 4096 and GNU.sparse.realsize 8192 disagree");
    let env = env_fresh();
    let e = E::file("f", [1u8; 512]).pax("GNU.sparse.map", "0,512");
    sparse_err(&env, env.run(&pax_tar(e)), "f", "without a real size");
}

#[test]
fn pax_sparse_names_and_types() {
    // GNU.sparse.name goes through the same path policy as any name.
    let env = env();
    let e = pax_sparse("1.0", "../../sentinel/a", &[(0, 512)], 512);
    invalid_path(env.run(&pax_tar(e)), "../../sentinel/a");
    assert!(!env.d("GNUSparseFile.0").exists(), "placeholder created");
    // 1.0 needs GNU.sparse.name: the ustar name is only a placeholder.
    let env = env_fresh();
    let e = E::file("GNUSparseFile.0/f", sparse_v10_data(&[(0, 512)]))
        .pax("GNU.sparse.major", "1")
        .pax("GNU.sparse.minor", "0")
        .pax("GNU.sparse.realsize", "512");
    sparse_err(&env, env.run(&pax_tar(e)), "GNUSparseFile.0/f", "without GNU.sparse.name");
    // Sparse records on a symlink.
    let env = env_fresh();
    let e = E::symlink("l", "t").pax("GNU.sparse.size", "512").pax("GNU.sparse.map", "0,512");
    sparse_err(&env, env.run(&pax_tar(e)), "l", "not a regular file");
    // Unknown versions and keys.
    let env = env_fresh();
    let mut e = pax_sparse("1.0", "f", &[(0, 512)], 512);
    e.pax[1].1 = b"1".to_vec();
    sparse_err(&env, env.run(&pax_tar(e)), "f", "GNU sparse format 1.1");
    let env = env_fresh();
    let e = pax_sparse("0.1", "f", &[(0, 512)], 512).pax("GNU.sparse.bogus", "1");
    sparse_err(&env, env.run(&pax_tar(e)), "f", "unknown PAX record GNU.sparse.bogus");
}

#[test]
fn sparse_data_truncated() {
    // A valid map whose data the stream does not hold: a corrupt stream at that entry.
    let env = env();
    let mut t = T::new();
    t.raw(&gnu_sparse_headers(b"f", &[slot(0, 4096), slot(1 << 20, 4096)], (1 << 20) + 4096, 8192));
    t.raw(&[1u8; 5000]);
    let e = corrupt(env.run(&t.buf));
    assert_eq!(e.path(), Some("f"));
    let env = env_fresh();
    let t = pax_tar(pax_sparse("0.1", "g", &[(0, 4096), (1 << 20, 4096)], (1 << 20) + 4096));
    let e = corrupt(env.run(&t[..1024 + 5000]));
    assert_eq!(e.path(), Some("g"));
}

/// 1,500 seeded random mutations of a tar of sparse entries in every format: every run returns
/// (no panic, no endless hole reading) and nothing outside the root changes.
#[test]
fn random_sparse_mutations_never_panic_or_escape() {
    let mut ext: Vec<(u64, u64)> = (0..7).map(|i| (i * 8192, 512)).collect();
    ext.push((7 * 8192, 0));
    let mut t = T::new();
    t.gnu_sparse(b"g", &ext, 7 * 8192);
    for v in ["0.0", "0.1", "1.0"] {
        t.add(pax_sparse(v, &format!("p{v}"), &ext, 7 * 8192));
    }
    t.add(E::file("last", "x"));
    let base = t.finish();
    let env = env();
    let dest = env.top.join("root").join("base");
    fs::create_dir(&dest).unwrap();
    unpack_layer(&base[..], &dest, &UnpackOptions::default()).expect("the unmutated tar unpacks");
    let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let start = std::time::Instant::now();
    let (mut ok, mut err) = (0, 0);
    for i in 0..1500 {
        let mut m = base.clone();
        for _ in 0..1 + next() % 4 {
            // Mostly inside headers and maps, where the interesting bytes are.
            let pos = (next() % m.len().min(6 * 1024) as u64) as usize;
            match next() % 4 {
                0 => m[pos] = next() as u8,
                1 => m[pos] ^= 1 << (next() % 8),
                2 => m[pos] = b"0123456789,\n\0\x80"[(next() % 14) as usize],
                _ => m[pos] = b'0' + (next() % 8) as u8,
            }
        }
        for blk in (0..m.len() / 512).map(|b| b * 512) {
            let h = &mut m[blk..blk + 512];
            if h[257..262] == *b"ustar" && i % 2 == 0 {
                fix_cksum(h);
            }
        }
        if unpack_mutant(&env, i, &m) {
            ok += 1;
        } else {
            err += 1;
        }
        if i % 100 == 0 {
            env.check_outside();
        }
    }
    env.check_outside();
    eprintln!("sparse mutations: {ok} ok, {err} errors in {:?}", start.elapsed());
    assert!(ok > 0 && err > 0, "mutations should exercise both outcomes: {ok} ok, {err} err");
}

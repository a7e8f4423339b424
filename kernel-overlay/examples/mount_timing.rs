//! Measures mount + unmount time: `cargo run -p kernel-overlay --example mount_timing [ITERS]` (root).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use kernel_overlay::{mount, mount_legacy, unmount, OverlaySpec, UnmountMode};

fn main() {
    let iters: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100);
    let tmp = std::env::temp_dir().join(format!("kovl-timing-{}", std::process::id()));
    let layers = tmp.join("layers");
    std::fs::create_dir_all(&layers).unwrap();
    let lowers: Vec<PathBuf> = (0..500)
        .map(|i| {
            let l = layers.join(format!("{i:03}"));
            std::fs::create_dir(&l).unwrap();
            std::fs::write(l.join(format!("f{i}")), "x").unwrap();
            l
        })
        .collect();
    let (m, u, w) = (tmp.join("m"), tmp.join("upper"), tmp.join("work"));
    for d in [&m, &u, &w] {
        std::fs::create_dir(d).unwrap();
    }
    for n in [10, 500] {
        for legacy in [false, true] {
            let spec = OverlaySpec::writable(lowers[..n].to_vec(), u.clone(), w.clone());
            let (mut t_mount, mut t_umount) = (Duration::ZERO, Duration::ZERO);
            let mut method = None;
            for _ in 0..iters {
                let start = Instant::now();
                method = Some(if legacy { mount_legacy(&spec, &m) } else { mount(&spec, &m) }.unwrap());
                let mid = Instant::now();
                unmount(&m, UnmountMode::Normal).unwrap();
                t_mount += mid - start;
                t_umount += mid.elapsed();
            }
            let (pm, pu) = (t_mount / iters as u32, t_umount / iters as u32);
            println!(
                "{n:>3} layers, {:?}: mount {pm:?} + umount {pu:?} = {:?} ({iters} iterations)",
                method.unwrap(),
                pm + pu
            );
        }
    }
    std::fs::remove_dir_all(&tmp).unwrap();
}

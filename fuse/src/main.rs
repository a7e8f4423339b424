fn main() {
    eprintln!("strata-fuse: not yet implemented");
    std::process::exit(1)
}

//! Rust bindings for containerd's snapshots API, generated from the `.proto` files containerd
//! ships (Debian: golang-github-containerd-containerd-dev, with gogo.proto from
//! golang-github-gogo-protobuf-dev). They are read where those packages put them, a GOPATH `src`
//! directory, or under `$STRATA_CONTAINERD_PROTO_DIR` laid out the same way; protox parses them,
//! so no protoc binary is needed.

use std::path::PathBuf;

const DEFAULT_DIR: &str = "/usr/share/gocode/src";
const SNAPSHOTS: &str = "github.com/containerd/containerd/api/services/snapshots/v1/snapshots.proto";

fn main() {
    println!("cargo:rerun-if-env-changed=STRATA_CONTAINERD_PROTO_DIR");
    let dir =
        PathBuf::from(std::env::var_os("STRATA_CONTAINERD_PROTO_DIR").unwrap_or_else(|| DEFAULT_DIR.into()));
    let gogo = dir.join("github.com/gogo/protobuf");
    let main_proto = dir.join(SNAPSHOTS);
    if !main_proto.is_file() {
        panic!(
            "{} not found: install golang-github-containerd-containerd-dev and \
             golang-github-gogo-protobuf-dev (scripts/setup.sh does), or point \
             STRATA_CONTAINERD_PROTO_DIR at a directory holding {SNAPSHOTS} and \
             github.com/gogo/protobuf/gogoproto/gogo.proto",
            main_proto.display()
        );
    }
    println!("cargo:rerun-if-changed={}", main_proto.display());
    let fds = match protox::compile([SNAPSHOTS], [&dir, &gogo]) {
        Ok(f) => f,
        Err(e) => panic!("parsing containerd's protos under {}: {e:?}", dir.display()),
    };
    if let Err(e) = tonic_prost_build::configure().build_client(false).build_server(true).compile_fds(fds) {
        panic!("generating containerd's snapshots bindings: {e}");
    }
}

// pull: containerd's Go client pulling an image with unpack into a snapshotter, the path CRI
// takes (the client's unpacker labels each Prepare with its target chain ID). Built in GOPATH
// mode against Debian's golang-github-containerd-containerd-dev by tests/containerd_ctr.rs.
//
// Usage: pull ADDRESS NAMESPACE SNAPSHOTTER REF [remote]   (REF from a plain-http registry)
//
// With `remote`, each layer's Prepare also carries the labels CRI's pull sets for remote
// snapshotters (pkg/snapshotters.AppendInfoHandlerWrapper: cri.image-ref, cri.layer-digest,
// cri.manifest-digest, cri.image-layers).
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/pkg/snapshotters"
	"github.com/containerd/containerd/remotes/docker"
)

func main() {
	if len(os.Args) != 5 && !(len(os.Args) == 6 && os.Args[5] == "remote") {
		fmt.Fprintln(os.Stderr, "usage: pull ADDRESS NAMESPACE SNAPSHOTTER REF [remote]")
		os.Exit(2)
	}
	client, err := containerd.New(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "connect:", err)
		os.Exit(1)
	}
	defer client.Close()
	ctx := namespaces.WithNamespace(context.Background(), os.Args[2])
	resolver := docker.NewResolver(docker.ResolverOptions{
		Hosts: docker.ConfigureDefaultRegistries(docker.WithPlainHTTP(docker.MatchAllHosts)),
	})
	opts := []containerd.RemoteOpt{
		containerd.WithPullUnpack,
		containerd.WithPullSnapshotter(os.Args[3]),
		containerd.WithResolver(resolver),
	}
	if len(os.Args) == 6 {
		opts = append(opts, containerd.WithImageHandlerWrapper(snapshotters.AppendInfoHandlerWrapper(os.Args[4])))
	}
	img, err := client.Pull(ctx, os.Args[4], opts...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "pull:", err)
		os.Exit(1)
	}
	fmt.Println(img.Name())
}

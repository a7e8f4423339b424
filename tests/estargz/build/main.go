// Command estargz-build converts a layer blob (a tar, plain or gzip) to eStargz with
// stargz-snapshotter's own writer (estargz.Build), as `ctr-remote image convert --estargz`
// does, and prints what an image needs to carry it: the blob's digest and size, its diff_id,
// the TOC digest (the containerd.io/snapshot/stargz/toc.digest annotation) and the size of its
// uncompressed tar (io.containers.estargz.uncompressed-size), space separated. Built in GOPATH
// mode against Debian's golang-github-containerd-stargz-snapshotter-dev, offline
// (cli/tests/it/lazy_interop.rs builds it).
//
// Usage: estargz-build IN OUT CHUNK_SIZE [PRIORITIZED_FILE...]
//
// Prioritized files that are not in the layer are allowed (the layer then starts with
// .no.prefetch.landmark when none is).
package main

import (
	"compress/gzip"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/containerd/stargz-snapshotter/estargz"
)

func main() {
	if len(os.Args) < 4 {
		fmt.Fprintln(os.Stderr, "usage: estargz-build IN OUT CHUNK_SIZE [PRIORITIZED_FILE...]")
		os.Exit(2)
	}
	if err := build(os.Args[1], os.Args[2], os.Args[3], os.Args[4:]); err != nil {
		fmt.Fprintln(os.Stderr, "estargz-build:", err)
		os.Exit(1)
	}
}

func build(in, out, chunk string, prioritized []string) error {
	chunkSize, err := strconv.Atoi(chunk)
	if err != nil {
		return fmt.Errorf("chunk size %q: %w", chunk, err)
	}
	f, err := os.Open(in)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	var missed []string
	blob, err := estargz.Build(io.NewSectionReader(f, 0, st.Size()),
		estargz.WithChunkSize(chunkSize),
		estargz.WithPrioritizedFiles(prioritized),
		estargz.WithAllowPrioritizeNotFound(&missed))
	if err != nil {
		return fmt.Errorf("build: %w", err)
	}
	defer blob.Close()
	o, err := os.Create(out)
	if err != nil {
		return err
	}
	h := sha256.New()
	size, err := io.Copy(io.MultiWriter(o, h), blob)
	if err != nil {
		o.Close()
		return err
	}
	if err := o.Close(); err != nil {
		return err
	}
	uncompressed, err := plainSize(out)
	if err != nil {
		return err
	}
	fmt.Printf("sha256:%x %d %s %s %d\n", h.Sum(nil), size, blob.DiffID(), blob.TOCDigest(), uncompressed)
	return nil
}

// plainSize is the length of the gzip stream at path, decompressed (every member).
func plainSize(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		return 0, err
	}
	return io.Copy(io.Discard, z)
}

// Command estargz-check reads an eStargz or zstd:chunked blob with stargz-snapshotter's own
// reader (estargz.Open, with its zstdchunked decompressor for the latter), verifies its TOC
// against the digest the layer descriptor names and every chunk against the TOC, and prints one
// line per entry: type, mode, uid, gid, size, content sha256 (regular files) or link target,
// name. Built in GOPATH mode against Debian's golang-github-containerd-stargz-snapshotter-dev,
// offline (cli/tests/it/lazy.rs builds it).
//
// Usage: estargz-check BLOB TOC_DIGEST
//
//	estargz-check -zstd BLOB MANIFEST_CHECKSUM MANIFEST_POSITION
//
// With -zstd the descriptor's annotations are given: the compressed TOC at MANIFEST_POSITION
// (offset:length:uncompressed:1) must hash to MANIFEST_CHECKSUM; the digest of its JSON is then
// the one the TOC estargz.Open found through the footer must have.
package main

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path"
	"sort"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/containerd/stargz-snapshotter/estargz/zstdchunked"
	"github.com/klauspost/compress/zstd"
	digest "github.com/opencontainers/go-digest"
)

func main() {
	var err error
	switch {
	case len(os.Args) == 3:
		err = check(os.Args[1], digest.Digest(os.Args[2]), nil)
	case len(os.Args) == 5 && os.Args[1] == "-zstd":
		err = checkZstd(os.Args[2], digest.Digest(os.Args[3]), os.Args[4])
	default:
		fmt.Fprintln(os.Stderr, "usage: estargz-check BLOB TOC_DIGEST | -zstd BLOB MANIFEST_CHECKSUM MANIFEST_POSITION")
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "estargz-check:", err)
		os.Exit(1)
	}
}

// checkZstd verifies the annotations against the blob, then reads it as check does.
func checkZstd(blob string, checksum digest.Digest, position string) error {
	var off, length, raw, kind int64
	if _, err := fmt.Sscanf(position, "%d:%d:%d:%d", &off, &length, &raw, &kind); err != nil || kind != 1 {
		return fmt.Errorf("bad manifest position %q", position)
	}
	f, err := os.Open(blob)
	if err != nil {
		return err
	}
	defer f.Close()
	compressed := make([]byte, length)
	if _, err := f.ReadAt(compressed, off); err != nil {
		return fmt.Errorf("reading the TOC at %s: %w", position, err)
	}
	if got := digest.FromBytes(compressed); got != checksum {
		return fmt.Errorf("manifest checksum: the annotation says %s, the bytes are %s", checksum, got)
	}
	dec, err := zstd.NewReader(bytes.NewReader(compressed))
	if err != nil {
		return err
	}
	defer dec.Close()
	json, err := io.ReadAll(dec)
	if err != nil {
		return fmt.Errorf("decompressing the TOC: %w", err)
	}
	if int64(len(json)) != raw {
		return fmt.Errorf("the TOC is %d bytes, the position says %d", len(json), raw)
	}
	return check(blob, digest.FromBytes(json), []estargz.OpenOption{
		estargz.WithDecompressors(new(zstdchunked.Decompressor)),
	})
}

func check(blob string, tocDigest digest.Digest, opts []estargz.OpenOption) error {
	f, err := os.Open(blob)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	r, err := estargz.Open(io.NewSectionReader(f, 0, st.Size()), opts...)
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	v, err := r.VerifyTOC(tocDigest)
	if err != nil {
		return fmt.Errorf("verify TOC: %w", err)
	}
	root, ok := r.Lookup("")
	if !ok {
		return fmt.Errorf("no root")
	}
	return walk(r, v, "", root)
}

func walk(r *estargz.Reader, v estargz.TOCEntryVerifier, name string, e *estargz.TOCEntry) error {
	var names []string
	children := map[string]*estargz.TOCEntry{}
	e.ForeachChild(func(base string, c *estargz.TOCEntry) bool {
		names = append(names, base)
		children[base] = c
		return true
	})
	sort.Strings(names)
	for _, base := range names {
		c := children[base]
		p := path.Join(name, base)
		extra := c.LinkName
		if c.Type == "reg" {
			sum, err := content(r, v, p, c)
			if err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			extra = sum
		}
		fmt.Printf("%s %o %d %d %d %s %s\n", c.Type, c.Stat().Mode().Perm(), c.UID, c.GID, c.Size, extra, p)
		if c.Type == "dir" {
			if err := walk(r, v, p, c); err != nil {
				return err
			}
		}
	}
	return nil
}

// content reads the file chunk by chunk, each verified against its TOC digest.
func content(r *estargz.Reader, v estargz.TOCEntryVerifier, p string, e *estargz.TOCEntry) (string, error) {
	h := sha256.New()
	sr, err := r.OpenFile(p)
	if err != nil {
		return "", err
	}
	for off := int64(0); off < e.Size; {
		ce, ok := r.ChunkEntryForOffset(p, off)
		if !ok {
			return "", fmt.Errorf("no chunk at %d", off)
		}
		buf := make([]byte, ce.ChunkSize)
		if _, err := sr.ReadAt(buf, ce.ChunkOffset); err != nil && err != io.EOF {
			return "", err
		}
		dv, err := v.Verifier(ce)
		if err != nil {
			return "", err
		}
		dv.Write(buf)
		if !dv.Verified() {
			return "", fmt.Errorf("chunk at %d does not match its digest", off)
		}
		h.Write(buf)
		off = ce.ChunkOffset + ce.ChunkSize
	}
	return fmt.Sprintf("%x", h.Sum(nil)), nil
}

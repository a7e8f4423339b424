// Command estargz-check reads an eStargz blob with stargz-snapshotter's own reader
// (estargz.Open), verifies its TOC against the digest the layer descriptor names and every
// chunk against the TOC, and prints one line per entry: type, mode, uid, gid, size, content
// sha256 (regular files) or link target, name. Built in GOPATH mode against Debian's
// golang-github-containerd-stargz-snapshotter-dev, offline (cli/tests/it/lazy.rs builds it).
//
// Usage: estargz-check BLOB TOC_DIGEST
package main

import (
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path"
	"sort"

	"github.com/containerd/stargz-snapshotter/estargz"
	digest "github.com/opencontainers/go-digest"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: estargz-check BLOB TOC_DIGEST")
		os.Exit(2)
	}
	if err := check(os.Args[1], digest.Digest(os.Args[2])); err != nil {
		fmt.Fprintln(os.Stderr, "estargz-check:", err)
		os.Exit(1)
	}
}

func check(blob string, tocDigest digest.Digest) error {
	f, err := os.Open(blob)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	r, err := estargz.Open(io.NewSectionReader(f, 0, st.Size()))
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

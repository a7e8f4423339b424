// snapbench: the latency of a container's snapshot set-up and tear-down as containerd's client
// sees it: COUNT cycles of Prepare(key, the image's top chain) + Mounts(key) + Remove(key)
// through client.SnapshotService(SNAPSHOTTER), under one lease (so containerd's gc never takes
// a snapshot between its Prepare and its Remove). Built in GOPATH mode against Debian's
// golang-github-containerd-containerd-dev by scripts/bench-containerd.sh.
//
// Usage: snapbench ADDRESS NAMESPACE SNAPSHOTTER IMAGE COUNT
//
// Prints one line of microseconds: the mean and median of a whole cycle, and the median of
// each call:
//
//	cycles=COUNT mean_us=M median_us=D prepare_us=P mounts_us=O remove_us=R
package main

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/namespaces"
	"github.com/opencontainers/image-spec/identity"
)

func fail(what string, err error) {
	fmt.Fprintf(os.Stderr, "snapbench: %s: %v\n", what, err)
	os.Exit(1)
}

// median of microseconds (sorts its argument).
func median(us []float64) float64 {
	sort.Float64s(us)
	n := len(us)
	if n%2 == 1 {
		return us[n/2]
	}
	return (us[n/2-1] + us[n/2]) / 2
}

func micros(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1000 }

func main() {
	if len(os.Args) != 6 {
		fmt.Fprintln(os.Stderr, "usage: snapbench ADDRESS NAMESPACE SNAPSHOTTER IMAGE COUNT")
		os.Exit(2)
	}
	count, err := strconv.Atoi(os.Args[5])
	if err != nil || count < 1 {
		fmt.Fprintln(os.Stderr, "snapbench: COUNT must be a positive number")
		os.Exit(2)
	}
	client, err := containerd.New(os.Args[1])
	if err != nil {
		fail("connect", err)
	}
	defer client.Close()
	ctx := namespaces.WithNamespace(context.Background(), os.Args[2])
	ctx, done, err := client.WithLease(ctx)
	if err != nil {
		fail("lease", err)
	}
	defer done(context.Background())
	img, err := client.GetImage(ctx, os.Args[4])
	if err != nil {
		fail("image", err)
	}
	diffIDs, err := img.RootFS(ctx)
	if err != nil {
		fail("image rootfs", err)
	}
	parent := identity.ChainID(diffIDs).String()
	sn := client.SnapshotService(os.Args[3])
	var cycle, prep, mnts, rm []float64
	for i := 0; i < count; i++ {
		key := fmt.Sprintf("snapbench-%d-%d", os.Getpid(), i)
		t0 := time.Now()
		if _, err := sn.Prepare(ctx, key, parent); err != nil {
			fail("prepare", err)
		}
		t1 := time.Now()
		m, err := sn.Mounts(ctx, key)
		if err != nil {
			fail("mounts", err)
		}
		if len(m) == 0 {
			fail("mounts", fmt.Errorf("no mounts for %q", key))
		}
		t2 := time.Now()
		if err := sn.Remove(ctx, key); err != nil {
			fail("remove", err)
		}
		t3 := time.Now()
		cycle = append(cycle, micros(t3.Sub(t0)))
		prep = append(prep, micros(t1.Sub(t0)))
		mnts = append(mnts, micros(t2.Sub(t1)))
		rm = append(rm, micros(t3.Sub(t2)))
	}
	var sum float64
	for _, c := range cycle {
		sum += c
	}
	fmt.Printf("cycles=%d mean_us=%.0f median_us=%.0f prepare_us=%.0f mounts_us=%.0f remove_us=%.0f\n",
		count, sum/float64(count), median(cycle), median(prep), median(mnts), median(rm))
}

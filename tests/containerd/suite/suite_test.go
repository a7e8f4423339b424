// containerd's snapshotter conformance suite (snapshots/testsuite) against strata-snapshotter,
// reached the way containerd reaches a proxy plugin: its snapshots/proxy client over gRPC on a
// unix socket. Built in GOPATH mode against Debian's golang-github-containerd-containerd-dev
// (tests/containerd_suite.rs runs it); $STRATA_SNAPSHOTTER names the daemon binary.
package suite

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/containerd/snapshots/proxy"
	"github.com/containerd/containerd/snapshots/testsuite"
	"google.golang.org/grpc"
)

func newSnapshotter(ctx context.Context, root string) (snapshots.Snapshotter, func() error, error) {
	bin := os.Getenv("STRATA_SNAPSHOTTER")
	if bin == "" {
		return nil, nil, fmt.Errorf("STRATA_SNAPSHOTTER (the strata-snapshotter binary) is not set")
	}
	sock := filepath.Join(root, "s.sock")
	state := filepath.Join(root, "state")
	cmd := exec.Command(bin, "--root", state, "--address", sock)
	cmd.Stdout = os.Stderr
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() error {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			return err
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			return fmt.Errorf("strata-snapshotter did not stop on SIGTERM")
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			break
		}
		select {
		case err := <-exited:
			return nil, nil, fmt.Errorf("strata-snapshotter exited before serving: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-exited
			return nil, nil, fmt.Errorf("strata-snapshotter did not create %s", sock)
		}
		time.Sleep(10 * time.Millisecond)
	}
	conn, err := grpc.DialContext(ctx, "unix://"+sock,
		grpc.WithInsecure(), //nolint:staticcheck // grpc-go in Debian 12 is older than credentials/insecure
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}))
	if err != nil {
		_ = stop()
		return nil, nil, err
	}
	sn := proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), "strata")
	return sn, func() error {
		err1 := sn.Close()
		err2 := conn.Close()
		err3 := stop()
		for _, e := range []error{err1, err2, err3} {
			if e != nil {
				return e
			}
		}
		return nil
	}, nil
}

func TestStrata(t *testing.T) {
	testsuite.SnapshotterSuite(t, "strata", newSnapshotter)
}

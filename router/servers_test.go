package router

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// ownServer is a redis-server or nats-server this test started itself, on a
// free port, so that it can pause (SIGSTOP), kill and restart it without
// touching the machine's own services.
type ownServer struct {
	t    *testing.T
	name string
	args []string
	addr string
	cmd  *exec.Cmd
}

// freeAddr returns a loopback address nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// startOwnRedis starts a redis-server of the test's own, without persistence.
func startOwnRedis(t *testing.T) *ownServer {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server not installed")
	}
	addr := freeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	s := &ownServer{t: t, name: bin, addr: addr,
		args: []string{"--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", t.TempDir()}}
	s.start()
	return s
}

// startOwnNats starts a nats-server with JetStream and a store dir of its own,
// which survives a restart of the server.
func startOwnNats(t *testing.T) *ownServer {
	t.Helper()
	bin, err := exec.LookPath("nats-server")
	if err != nil {
		if _, err2 := os.Stat("/usr/sbin/nats-server"); err2 != nil {
			t.Skip("nats-server not installed")
		}
		bin = "/usr/sbin/nats-server"
	}
	addr := freeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	s := &ownServer{t: t, name: bin, addr: addr,
		args: []string{"-a", "127.0.0.1", "-p", port, "-js", "-sd", filepath.Join(t.TempDir(), "js")}}
	s.start()
	return s
}

func (s *ownServer) start() {
	s.t.Helper()
	s.cmd = exec.Command(s.name, s.args...)
	out, err := s.cmd.StdoutPipe()
	if err != nil {
		s.t.Fatal(err)
	}
	s.cmd.Stderr = s.cmd.Stdout
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("start %s: %v", s.name, err)
	}
	cmd := s.cmd
	s.t.Cleanup(func() { s.kill(cmd) })
	go func() {
		// Drain its output so that it never blocks on a full pipe.
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if testing.Verbose() {
				s.t.Log(filepath.Base(s.name) + ": " + sc.Text())
			}
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", s.addr, 100*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("%s did not listen on %s within 10s", s.name, s.addr)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (s *ownServer) kill(cmd *exec.Cmd) {
	if cmd.ProcessState != nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGCONT) // a paused server cannot die
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
}

// pause stops the server (SIGSTOP): connections stay open, nothing answers.
func (s *ownServer) pause() { s.signal(syscall.SIGSTOP) }

// resume continues a paused server.
func (s *ownServer) resume() { s.signal(syscall.SIGCONT) }

func (s *ownServer) signal(sig syscall.Signal) {
	s.t.Helper()
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.t.Fatalf("signal %v to %s: %v", sig, s.name, err)
	}
}

// killHard kills the server (SIGKILL) and waits for it to exit.
func (s *ownServer) killHard() { s.kill(s.cmd) }

// restart starts the server again on the same address and store.
func (s *ownServer) restart() {
	s.t.Helper()
	s.kill(s.cmd)
	s.start()
}

// url is the server's URL with the given scheme.
func (s *ownServer) url(scheme string) string { return scheme + "://" + s.addr }

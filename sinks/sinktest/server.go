package sinktest

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Binary returns the path of the server program name, looked up in dirs
// first, then in PATH. When it is missing the test fails if the CI
// environment variable is set (CI installs every server these tests start)
// and is skipped otherwise, saying so.
func Binary(t *testing.T, name string, dirs ...string) string {
	t.Helper()
	for _, d := range dirs {
		if p := filepath.Join(d, name); isExecutable(p) {
			return p
		}
	}
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s not found: %v; CI must install it (.ci/run starts the servers the tests use)", name, err)
	}
	t.Skipf("%s not found (%v): install it to run this test (in CI this fails)", name, err)
	return ""
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}

// FreePort returns a loopback TCP port nothing listens on: one the kernel
// handed out and that was closed again at once.
func FreePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Unique returns 12 random hex digits, for names (tables, queues, topics)
// that concurrent test runs must not share.
func Unique() string {
	b := make([]byte, 6)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Server is a server process of the test's own — never the machine's
// service — listening on Port on 127.0.0.1, which a fault test stops in the
// middle of a run and starts again on the same port and data.
type Server struct {
	t    *testing.T
	spec ServerSpec

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has exited
}

// ServerSpec says how to run a Server.
type ServerSpec struct {
	// Name names the server in failures ("rabbitmq").
	Name string
	// Port is where it listens.
	Port int
	// Ready reports whether the server is serving; nil means once a TCP
	// connection to Port succeeds (some servers accept connections before
	// they serve them).
	Ready func() error
	// Command returns the command running the server in the foreground, a
	// new one for every start.
	Command func() *exec.Cmd
	// Stop stops the running server; nil sends SIGKILL. Stop returns once
	// asked; Server waits for the process to exit.
	Stop func(cmd *exec.Cmd) error
	// Log is the server's log file, shown when it does not come up.
	Log string
	// Boot bounds one start; zero means 30 seconds.
	Boot time.Duration
}

// StartServer starts the server and waits until it accepts connections; it
// is killed at the end of the test. The process runs in a process group of
// its own, so that helpers it forks die with it.
func StartServer(t *testing.T, spec ServerSpec) *Server {
	t.Helper()
	if spec.Boot == 0 {
		spec.Boot = 30 * time.Second
	}
	s := &Server{t: t, spec: spec}
	t.Cleanup(s.kill)
	if err := s.start(); err != nil {
		t.Fatal(err)
	}
	return s
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.spec.Port) }

// Start starts the stopped server again and waits until it accepts
// connections. It may be called from any goroutine: a failure is reported
// with t.Error.
func (s *Server) Start() {
	if err := s.start(); err != nil {
		s.t.Error(err)
	}
}

// Stop stops the server (Spec.Stop, or SIGKILL) and waits for its process to
// exit. It may be called from any goroutine.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	var err error
	if s.spec.Stop != nil {
		err = s.spec.Stop(s.cmd)
	} else {
		err = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	}
	if err != nil {
		s.t.Errorf("stop %s: %v", s.spec.Name, err)
		syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	}
	select {
	case <-s.exited:
	case <-time.After(s.spec.Boot):
		s.t.Errorf("%s did not exit within %v of being stopped; killing it", s.spec.Name, s.spec.Boot)
		syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.exited
	}
	s.cmd = nil
}

func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return fmt.Errorf("start %s: already running", s.spec.Name)
	}
	cmd := s.spec.Command()
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %v", s.spec.Name, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	s.cmd, s.exited = cmd, exited
	deadline := time.Now().Add(s.spec.Boot)
	for {
		err := s.ready()
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			s.cmd = nil
			return fmt.Errorf("%s exited while starting (%v)%s", s.spec.Name, cmd.ProcessState, s.logTail())
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s was not ready on %s within %v: %v%s", s.spec.Name, s.Addr(), s.spec.Boot, err, s.logTail())
		}
		time.Sleep(50 * time.Millisecond) // polling for readiness
	}
}

func (s *Server) ready() error {
	if s.spec.Ready != nil {
		return s.spec.Ready()
	}
	c, err := net.DialTimeout("tcp", s.Addr(), time.Second)
	if err == nil {
		c.Close()
	}
	return err
}

// kill ends whatever is left of the server at the end of the test.
func (s *Server) kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	if err := syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		s.t.Logf("kill %s: %v", s.spec.Name, err)
	}
	<-s.exited
	s.cmd = nil
}

func (s *Server) logTail() string {
	if s.spec.Log == "" {
		return ""
	}
	b, err := os.ReadFile(s.spec.Log)
	if err != nil {
		return ""
	}
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return "\n" + s.spec.Name + " log " + s.spec.Log + ":\n" + string(b)
}

// Package tlscert serves the ingress over TLS: the tls section of the
// config, and a Holder that keeps the certificate in force and re-reads it
// when asked (SIGHUP, a reload) or when its files change, so that a renewed
// certificate is served without a restart.
package tlscert

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/hookrouter/hookrouter/sinks"
)

// Config is the tls section of the config file. Relative paths are
// relative to the working directory, as data_dir is.
type Config struct {
	// CertFile and KeyFile are the PEM certificate (chain) and private key
	// the ingress serves; both or neither.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ClientCAFile, when set, holds the PEM certificates of the CAs whose
	// client certificates are accepted; a client without one is refused
	// during the handshake (mTLS).
	ClientCAFile string `yaml:"client_ca_file"`
}

// Enabled reports whether the ingress serves TLS.
func (c *Config) Enabled() bool { return c.CertFile != "" || c.KeyFile != "" || c.ClientCAFile != "" }

// Validate reports every problem of c: a missing half of the pair, a file
// that cannot be read, a pair that does not load, a CA file without
// certificates. Messages never quote the key.
func (c *Config) Validate() []sinks.FieldError {
	if !c.Enabled() {
		return nil
	}
	var errs []sinks.FieldError
	if c.CertFile == "" {
		errs = append(errs, sinks.Required("cert_file", "required: TLS needs the certificate file (PEM) with key_file"))
	}
	if c.KeyFile == "" {
		errs = append(errs, sinks.Required("key_file", "required: TLS needs the private key file (PEM) with cert_file"))
	}
	readable := func(field, path string) bool {
		if path == "" {
			return false
		}
		if _, err := os.ReadFile(path); err != nil {
			errs = append(errs, sinks.Errorf(field, "cannot read %s: %v", path, unwrapPath(err)))
			return false
		}
		return true
	}
	certOK, keyOK := readable("cert_file", c.CertFile), readable("key_file", c.KeyFile)
	if certOK && keyOK {
		if _, err := loadPair(c.CertFile, c.KeyFile); err != nil {
			errs = append(errs, sinks.Errorf("cert_file", "%v", err))
		}
	}
	if readable("client_ca_file", c.ClientCAFile) {
		if _, err := loadPool(c.ClientCAFile); err != nil {
			errs = append(errs, sinks.Errorf("client_ca_file", "%v", err))
		}
	}
	return errs
}

// unwrapPath drops the path an *os.PathError repeats.
func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func loadPair(certFile, keyFile string) (*tls.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("cert_file %s and key_file %s are not a usable pair: %v", certFile, keyFile, unwrapPath(err))
	}
	return &cert, nil
}

func loadPool(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("client_ca_file %s: %v", file, unwrapPath(err))
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("client_ca_file %s holds no PEM certificate", file)
	}
	return pool, nil
}

// state is what one load of the files gave.
type state struct {
	cfg    Config
	cert   *tls.Certificate
	server *tls.Config // per-handshake config: ClientCAs and ClientAuth
}

// Holder keeps the ingress's certificate (and client CAs) in force. A load
// that fails keeps what was in force and logs an error.
type Holder struct {
	log *slog.Logger
	cur atomic.Pointer[state]

	mu      sync.Mutex // orders loads and the watcher's directory set
	watcher *fsnotify.Watcher
	dirs    map[string]bool
	timer   *time.Timer
	done    chan struct{}
}

// New loads c's files and watches their directories for changes.
func New(c Config, log *slog.Logger) (*Holder, error) {
	h := &Holder{log: log, dirs: map[string]bool{}, done: make(chan struct{})}
	st, err := h.load(c)
	if err != nil {
		return nil, err
	}
	h.cur.Store(st)
	w, err := fsnotify.NewWatcher()
	if err != nil {
		log.Warn("tls files will not be watched; a renewed certificate needs SIGHUP or POST /-/reload", "error", err)
		return h, nil
	}
	h.watcher = w
	h.mu.Lock()
	h.watchDirs(c)
	h.mu.Unlock()
	go h.watch()
	return h, nil
}

func (h *Holder) load(c Config) (*state, error) {
	cert, err := loadPair(c.CertFile, c.KeyFile)
	if err != nil {
		return nil, err
	}
	sc := &tls.Config{
		MinVersion: tls.VersionTLS12,
		// The certificate is looked up at each handshake, so a renewed one
		// is served from the next handshake on.
		GetCertificate: h.GetCertificate,
	}
	if c.ClientCAFile != "" {
		pool, err := loadPool(c.ClientCAFile)
		if err != nil {
			return nil, err
		}
		sc.ClientCAs, sc.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return &state{cfg: c, cert: cert, server: sc}, nil
}

// TLSConfig is the config for the ingress listener: TLS 1.2 and later, the
// certificate and client CAs in force at each handshake.
func (h *Holder) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: h.GetCertificate,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return h.cur.Load().server, nil
		},
	}
}

// GetCertificate returns the certificate in force (tls.Config.GetCertificate).
func (h *Holder) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return h.cur.Load().cert, nil
}

// Certificate returns the leaf of the certificate in force.
func (h *Holder) Certificate() *x509.Certificate { return h.cur.Load().cert.Leaf }

// Use loads c's files (the running ones again, or new paths after a
// reload) and puts them in force. When they do not load, what is in force
// stays and the error is logged and returned.
func (h *Holder) Use(c Config, trigger string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	st, err := h.load(c)
	if err != nil {
		h.log.Error("tls certificate not reloaded; the previous one is still served", "trigger", trigger, "error", err)
		return err
	}
	old := h.cur.Swap(st)
	if h.watcher != nil && !h.closed() {
		h.watchDirs(c)
	}
	if old.cfg != c || !old.cert.Leaf.Equal(st.cert.Leaf) {
		h.log.Info("tls certificate loaded", "trigger", trigger, "cert_file", c.CertFile,
			"subject", st.cert.Leaf.Subject.String(), "serial", st.cert.Leaf.SerialNumber.String(),
			"not_after", st.cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

// watchDirs watches the directories of c's files, not the files: certbot
// and cert-manager replace them by a rename (or a symlink swap), which a
// watch on the old file would not see. Called with h.mu held.
func (h *Holder) watchDirs(c Config) {
	want := map[string]bool{}
	for _, f := range []string{c.CertFile, c.KeyFile, c.ClientCAFile} {
		if f == "" {
			continue
		}
		want[filepath.Dir(f)] = true
		if real, err := filepath.EvalSymlinks(f); err == nil {
			want[filepath.Dir(real)] = true
		}
	}
	for d := range h.dirs {
		if !want[d] {
			_ = h.watcher.Remove(d)
			delete(h.dirs, d)
		}
	}
	for d := range want {
		if h.dirs[d] {
			continue
		}
		if err := h.watcher.Add(d); err != nil {
			h.log.Warn("tls directory not watched; a renewed certificate there needs SIGHUP", "dir", d, "error", err)
			continue
		}
		h.dirs[d] = true
	}
}

// debounce groups the writes of one renewal (certificate, then key) into
// one load; a load between them would fail on a mismatched pair, keep the
// old one, and the next event would load the pair.
const debounce = 100 * time.Millisecond

func (h *Holder) watch() {
	for {
		select {
		case _, ok := <-h.watcher.Events:
			if !ok {
				return
			}
			h.mu.Lock()
			if h.timer == nil {
				h.timer = time.AfterFunc(debounce, func() {
					if !h.closed() {
						_ = h.Use(h.cur.Load().cfg, "file change")
					}
				})
			} else {
				h.timer.Reset(debounce)
			}
			h.mu.Unlock()
		case err, ok := <-h.watcher.Errors:
			if !ok {
				return
			}
			h.log.Warn("tls file watch", "error", err)
		}
	}
}

func (h *Holder) closed() bool {
	select {
	case <-h.done:
		return true
	default:
		return false
	}
}

// Close stops watching the files.
func (h *Holder) Close() {
	if h == nil || h.watcher == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed() {
		return
	}
	close(h.done)
	if h.timer != nil {
		h.timer.Stop()
	}
	h.watcher.Close()
}

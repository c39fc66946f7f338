package router

import (
	"log/slog"

	"github.com/hookrouter/hookrouter/router/config"
)

// placeholderSecret is the secret of the platform's own examples, which a
// copied config keeps unless someone changes it.
const placeholderSecret = "your_secret_key"

// warnWeakSecrets logs, at start and at each reload that applies, a WARN for
// each source that anyone can send to: auth type none, or a secret that is
// empty or the documentation's placeholder. The secret itself is never
// logged.
func warnWeakSecrets(log *slog.Logger, f *config.File) {
	for _, s := range f.Sources {
		a := s.Auth
		if a.Type == "none" {
			log.Warn("source accepts events from anyone: its auth type is none", "source", s.Name, "path", s.Path)
			continue
		}
		secrets := a.AllSecrets()
		if len(secrets) == 0 {
			log.Warn("source secret is empty: set it", "source", s.Name, "path", s.Path)
		}
		for i, sec := range secrets {
			switch sec {
			case "":
				log.Warn("source secret is empty: set it", "source", s.Name, "path", s.Path, "secret_index", i)
			case placeholderSecret:
				log.Warn("source secret is the documentation's placeholder \"your_secret_key\": set WEBHOOK_SECRET_KEY or the source's secret",
					"source", s.Name, "path", s.Path, "secret_index", i)
			}
		}
	}
}

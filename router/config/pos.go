package config

// Pos is a 1-based line and column in the config file.
type Pos struct{ Line, Col int }

// Package bench holds benchmarks that need the real test bed. They run only
// with SPIREPOD_BENCH=1 (see the *.sh scripts) and report, never assert.
package bench

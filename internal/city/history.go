package city

import (
	"context"
	"crypto/sha1" //nolint:gosec // block keys are SHA-1 fingerprints
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"strings"

	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// historian finds, for trust-list blocks without an owner comment, the
// commit that added each one.
type historian interface {
	addedBy(ctx context.Context, file string, keys map[string]bool) (map[string]commitInfo, error)
}

type commitInfo struct {
	Hash    string
	Message string
	Author  string
}

// addedBy walks the history of file from the tree's commit, newest first,
// and names for each wanted block key the latest commit whose version of
// the file holds the block while its first parent's does not: the commit
// that added the block now in the file.
func (g *GitTree) addedBy(ctx context.Context, file string, keys map[string]bool) (map[string]commitInfo, error) {
	out := map[string]commitInfo{}
	if len(keys) == 0 {
		return out, nil
	}
	it, err := g.repo.Log(&git.LogOptions{From: g.Commit, PathFilter: func(p string) bool { return p == file }})
	if err != nil {
		return nil, fmt.Errorf("git log %s: %w", file, err)
	}
	defer it.Close()
	errDone := errors.New("done")
	err = it.ForEach(func(c *object.Commit) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		now := blockKeysAt(c, file)
		var before map[string]bool
		if p, err := c.Parent(0); err == nil {
			before = blockKeysAt(p, file)
		}
		for k := range now {
			if !keys[k] || before[k] {
				continue
			}
			if _, seen := out[k]; !seen {
				out[k] = commitInfo{Hash: c.Hash.String(), Message: c.Message, Author: strings.TrimSpace(c.Author.Name + " <" + c.Author.Email + ">")}
			}
		}
		if len(out) == len(keys) {
			return errDone
		}
		return nil
	})
	if err != nil && !errors.Is(err, errDone) && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("git log %s: %w", file, err)
	}
	return out, nil
}

func blockKeysAt(c *object.Commit, file string) map[string]bool {
	f, err := c.File(file)
	if err != nil {
		return nil
	}
	s, err := f.Contents()
	if err != nil {
		return nil
	}
	return blockKeys([]byte(s))
}

// blockKeys are the SHA-1s of every PEM block's bytes.
func blockKeys(data []byte) map[string]bool {
	out := map[string]bool{}
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return out
		}
		sum := sha1.Sum(b.Bytes) //nolint:gosec
		out[hex.EncodeToString(sum[:])] = true
	}
}

package main

import (
	"testing"

	"github.com/paystream/paystream/internal/testenv/pgtest"
)

func TestMain(m *testing.M) {
	pgtest.MainWithConfig(m, pgtest.MainConfig{CheckLeaks: true})
}

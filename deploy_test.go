package paystream_test

// These tests check the container deployment (Dockerfile, .dockerignore,
// docker-compose.yml and deploy/nats.conf) without a Docker engine: they parse
// the files with the parsers Docker itself uses (BuildKit's Dockerfile parser,
// compose-go, moby/patternmatcher, nats-server's configuration parser) and
// check them against the code: the worker's config package, the flags of
// cmd/gatewaysim and cmd/publisher (read from their source), and go.mod.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	dfparser "github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"

	"github.com/paystream/paystream/config"
	"github.com/paystream/paystream/gateway/sim"
)

const (
	composeFile    = "docker-compose.yml"
	dockerfileName = "Dockerfile"
	dockerignore   = ".dockerignore"
	// imageBinDir is where the image keeps the binaries.
	imageBinDir = "/usr/local/bin"
	// composeDefaultStopGrace is what Compose waits after SIGTERM before it
	// sends SIGKILL when a service sets no stop_grace_period.
	composeDefaultStopGrace = 10 * time.Second
	// natsDefaultPort is the client port of a nats-server whose
	// configuration names none, and of a nats:// URL without a port.
	natsDefaultPort = 4222
	// postgresDefaultPort is where the postgres image listens.
	postgresDefaultPort = 5432
	// postgresDefaultData is the data directory of the postgres image (its
	// PGDATA) unless the service sets PGDATA.
	postgresDefaultData = "/var/lib/postgresql/data"
)

// commands are the binaries of the image, each built from ./cmd/<name>.
func commands() []string { return []string{"worker", "publisher", "gatewaysim"} }

// Service names that the URLs of the paystream services must point at.
const (
	natsService       = "nats"
	postgresService   = "postgres"
	gatewaysimService = "gatewaysim"
	workerService     = "worker"
	publisherService  = "publisher"
	outboxMigrate     = "outbox-migrate"
	outboxRelay       = "outbox-relay"
	// clusterProfile holds the three-node NATS cluster and its workers
	// (docs/compose.md); only those services may sit in it.
	clusterProfile = "cluster"
	// observabilityProfile holds Prometheus and Grafana.
	observabilityProfile = "observability"
)

// --- go.mod -----------------------------------------------------------------

// goMod is what the tests need of go.mod.
type goMod struct {
	goMajor, goMinor, goPatch int
	require                   map[string]string // module path → version
}

func readGoMod(t *testing.T) goMod {
	t.Helper()
	data, err := os.ReadFile("go.mod")
	require.NoError(t, err)
	m := goMod{require: map[string]string{}}
	goLine := regexp.MustCompile(`^go\s+(\d+)\.(\d+)(?:\.(\d+))?\s*$`)
	reqLine := regexp.MustCompile(`^(?:require\s+)?(\S+)\s+(v\S+)(?:\s+//.*)?$`)
	found := false
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if g := goLine.FindStringSubmatch(line); g != nil {
			m.goMajor, _ = strconv.Atoi(g[1])
			m.goMinor, _ = strconv.Atoi(g[2])
			m.goPatch, _ = strconv.Atoi(g[3]) // "" → 0
			found = true
			continue
		}
		if r := reqLine.FindStringSubmatch(line); r != nil {
			m.require[r[1]] = r[2]
		}
	}
	require.NoError(t, sc.Err())
	require.True(t, found, "go.mod has no go directive")
	return m
}

// --- Dockerfile -------------------------------------------------------------

// image is the result of reading the Dockerfile.
type image struct {
	stages []instructions.Stage
	// builder is the index in stages of the stage that runs go build, or -1.
	builder int
	// build is the go build command line of the builder stage, or "".
	build string
	// buildRun is the RUN instruction of build.
	buildRun *instructions.RunCommand
	// binaries maps each binary of the final stage in imageBinDir to the
	// path it was copied from.
	binaries map[string]string
	// entrypoint is the final ENTRYPOINT, or nil.
	entrypoint *instructions.EntrypointCommand
	// user is the final stage's last USER, or "".
	user string
}

func (im image) final() instructions.Stage { return im.stages[len(im.stages)-1] }

// readImage parses the Dockerfile with BuildKit's parser and requires that
// BuildKit reports neither a parse warning nor a lint warning.
func readImage(t *testing.T) image {
	t.Helper()
	f, err := os.Open(dockerfileName)
	require.NoError(t, err)
	defer f.Close()
	res, err := dfparser.Parse(f)
	require.NoError(t, err, "Dockerfile does not parse")
	for _, w := range res.Warnings {
		t.Errorf("Dockerfile: parser warning: %s", w.Short)
	}
	var lints []string
	lint := linter.New(&linter.Config{Warn: func(rule, _, _, msg string, loc []dfparser.Range) {
		line := 0
		if len(loc) > 0 {
			line = loc[0].Start.Line
		}
		lints = append(lints, fmt.Sprintf("line %d: %s: %s", line, rule, msg))
	}})
	stages, _, err := instructions.Parse(res.AST, lint)
	require.NoError(t, err, "Dockerfile: BuildKit rejects an instruction")
	require.Empty(t, lints, "Dockerfile: BuildKit build-check warnings")
	require.NotEmpty(t, stages, "Dockerfile has no FROM")

	im := image{stages: stages, builder: -1, binaries: map[string]string{}}
	for i, st := range stages {
		for _, c := range st.Commands {
			run, ok := c.(*instructions.RunCommand)
			if !ok {
				continue
			}
			// Parse the --mount flags, which BuildKit defers to variable
			// expansion (none here: the test reads the words as written).
			require.NoError(t, run.Expand(func(w string) (string, error) { return w, nil }),
				"Dockerfile: %q", run.String())
			line := strings.Join(run.CmdLine, " ")
			if strings.Contains(line, "go build") {
				require.Equal(t, -1, im.builder, "Dockerfile: more than one RUN runs go build; the test expects one builder")
				im.builder, im.build, im.buildRun = i, line, run
			}
		}
	}
	final := im.final()
	for _, c := range final.Commands {
		switch c := c.(type) {
		case *instructions.CopyCommand:
			if strings.TrimSuffix(c.DestPath, "/") != imageBinDir {
				continue
			}
			for _, src := range c.SourcePaths {
				im.binaries[path.Base(src)] = src
			}
		case *instructions.EntrypointCommand:
			im.entrypoint = c
		case *instructions.UserCommand:
			im.user = c.User
		}
	}
	return im
}

// stageIndex returns the index of the stage named name, or -1.
func (im image) stageIndex(name string) int {
	for i, st := range im.stages {
		if st.Name != "" && strings.EqualFold(st.Name, name) {
			return i
		}
	}
	return -1
}

// buildArgs returns the words of the go build command line.
func (im image) buildArgs() []string { return strings.Fields(im.build) }

// outputDir returns the directory that go build -o writes into.
func (im image) outputDir(t *testing.T) string {
	t.Helper()
	args := im.buildArgs()
	for i, a := range args {
		var out string
		switch {
		case a == "-o" && i+1 < len(args):
			out = args[i+1]
		case strings.HasPrefix(a, "-o="):
			out = strings.TrimPrefix(a, "-o=")
		default:
			continue
		}
		require.True(t, strings.HasSuffix(out, "/"),
			"Dockerfile: go build -o %q must name a directory (end in /) to build several commands", out)
		return out
	}
	require.Fail(t, "Dockerfile: go build has no -o directory", "build: %s", im.build)
	return ""
}

func TestDockerfile(t *testing.T) {
	t.Parallel()
	im := readImage(t)
	mod := readGoMod(t)

	t.Run("multi-stage", func(t *testing.T) {
		require.GreaterOrEqual(t, len(im.stages), 2, "Dockerfile must be multi-stage: a build stage and a small runtime stage")
		require.NotEqual(t, -1, im.builder, "Dockerfile: no stage runs go build")
		require.NotEqual(t, len(im.stages)-1, im.builder, "Dockerfile: the final stage must not be the build stage")
	})

	t.Run("COPY --from names an earlier stage", func(t *testing.T) {
		for i, st := range im.stages {
			for _, c := range st.Commands {
				cp, ok := c.(*instructions.CopyCommand)
				if !ok || cp.From == "" {
					continue
				}
				j := im.stageIndex(cp.From)
				require.NotEqual(t, -1, j, "Dockerfile: %q: --from=%s is not the name of a stage (use FROM ... AS <name>, not an index or an image)", cp.String(), cp.From)
				require.Less(t, j, i, "Dockerfile: %q copies from stage %q, which is not an earlier stage", cp.String(), cp.From)
			}
		}
	})

	t.Run("builder Go version matches go.mod", func(t *testing.T) {
		require.NotEqual(t, -1, im.builder)
		base := im.stages[im.builder].BaseName
		m := regexp.MustCompile(`^(?:docker\.io/)?(?:library/)?golang:(\d+)\.(\d+)(?:\.(\d+))?(?:-[a-z0-9.-]+)?(?:@sha256:[0-9a-f]{64})?$`).FindStringSubmatch(base)
		require.NotNil(t, m, "Dockerfile: builder image %q: want golang:<major>.<minor>[.<patch>][-<variant>], written out (no ARG)", base)
		major, _ := strconv.Atoi(m[1])
		minor, _ := strconv.Atoi(m[2])
		require.Equal(t, fmt.Sprintf("%d.%d", mod.goMajor, mod.goMinor), fmt.Sprintf("%d.%d", major, minor),
			"Dockerfile: builder image %q does not have go.mod's Go version", base)
		if m[3] != "" {
			// The golang images set GOTOOLCHAIN=local: an older patch
			// release refuses to build the module.
			patch, _ := strconv.Atoi(m[3])
			require.GreaterOrEqual(t, patch, mod.goPatch, "Dockerfile: builder image %q is older than go.mod's go %d.%d.%d", base, mod.goMajor, mod.goMinor, mod.goPatch)
		}
	})

	t.Run("builder builds the three commands statically", func(t *testing.T) {
		require.NotEqual(t, -1, im.builder)
		args := im.buildArgs()
		for _, name := range commands() {
			require.True(t, slices.Contains(args, "./cmd/"+name) || slices.Contains(args, "./cmd/..."),
				"Dockerfile: go build does not build ./cmd/%s: %s", name, im.build)
		}
		require.Contains(t, args, "-trimpath", "Dockerfile: go build without -trimpath: %s", im.build)

		// CGO_ENABLED=0 on the command line or in an ENV of the stage
		// before it: the runtime image has no C library.
		cgoOff := slices.Contains(args, "CGO_ENABLED=0")
		for _, c := range im.stages[im.builder].Commands {
			if c == im.buildRun {
				break
			}
			if env, ok := c.(*instructions.EnvCommand); ok {
				for _, kv := range env.Env {
					if kv.Key == "CGO_ENABLED" {
						cgoOff = kv.Value == "0"
					}
				}
			}
		}
		require.True(t, cgoOff, "Dockerfile: go build must run with CGO_ENABLED=0 (static binaries for a distroless/scratch image): %s", im.build)
		for _, a := range args {
			require.NotEqual(t, "CGO_ENABLED=1", a, "Dockerfile: go build with CGO_ENABLED=1")
		}
	})

	t.Run("builder uses cache mounts", func(t *testing.T) {
		require.NotNil(t, im.buildRun)
		targets := map[string]bool{}
		for _, m := range instructions.GetMounts(im.buildRun) {
			if m.Type == instructions.MountTypeCache {
				targets[m.Target] = true
			}
		}
		for _, want := range []string{"/go/pkg/mod", "/root/.cache/go-build"} {
			require.True(t, targets[want], "Dockerfile: go build lacks RUN --mount=type=cache,target=%s", want)
		}
	})

	t.Run("final stage", func(t *testing.T) {
		final := im.final()
		require.True(t, strings.HasPrefix(final.BaseName, "gcr.io/distroless/static") || final.BaseName == "scratch",
			"Dockerfile: final image %q: want gcr.io/distroless/static-* or scratch", final.BaseName)

		require.NotEmpty(t, im.user, "Dockerfile: the final stage sets no USER: it would run as root")
		user, group, _ := strings.Cut(im.user, ":")
		for _, id := range []string{user, group} {
			require.NotContains(t, []string{"root", "0"}, id, "Dockerfile: USER %s runs as root", im.user)
		}

		out := im.outputDir(t)
		for _, name := range commands() {
			src, ok := im.binaries[name]
			require.True(t, ok, "Dockerfile: the final stage does not copy %s into %s", name, imageBinDir)
			require.Equal(t, out+name, src, "Dockerfile: %s is copied from %s, but go build writes it to %s%s", name, src, out, name)
		}
		for _, c := range final.Commands {
			if cp, ok := c.(*instructions.CopyCommand); ok && strings.TrimSuffix(cp.DestPath, "/") == imageBinDir {
				require.NotEmpty(t, cp.From, "Dockerfile: %q copies binaries from the build context, not from the builder", cp.String())
				require.Equal(t, im.builder, im.stageIndex(cp.From), "Dockerfile: %q does not copy from the go build stage", cp.String())
			}
		}

		require.NotNil(t, im.entrypoint, "Dockerfile: the final stage has no ENTRYPOINT")
		require.False(t, im.entrypoint.PrependShell, "Dockerfile: ENTRYPOINT must be in exec form [\"...\"]: the image has no shell")
		require.NotEmpty(t, im.entrypoint.CmdLine)
		require.Contains(t, []string{imageBinDir + "/worker", "worker"}, im.entrypoint.CmdLine[0],
			"Dockerfile: ENTRYPOINT %q is not the worker", im.entrypoint.CmdLine)
	})

	t.Run("COPY sources exist and are in the build context", func(t *testing.T) {
		pm := readDockerignore(t)
		for _, st := range im.stages {
			for _, c := range st.Commands {
				cp, ok := c.(*instructions.CopyCommand)
				if !ok || cp.From != "" {
					continue
				}
				for _, src := range cp.SourcePaths {
					if src == "." || src == "./" {
						continue
					}
					_, err := os.Stat(src)
					require.NoError(t, err, "Dockerfile: %q copies %s, which does not exist", cp.String(), src)
					excluded, err := pm.MatchesOrParentMatches(src)
					require.NoError(t, err)
					require.False(t, excluded, "Dockerfile: %q copies %s, which .dockerignore excludes", cp.String(), src)
				}
			}
		}
	})
}

// --- .dockerignore ------------------------------------------------------------

func readDockerignore(t *testing.T) *patternmatcher.PatternMatcher {
	t.Helper()
	f, err := os.Open(dockerignore)
	require.NoError(t, err)
	defer f.Close()
	patterns, err := ignorefile.ReadAll(f)
	require.NoError(t, err, ".dockerignore does not parse")
	pm, err := patternmatcher.New(patterns)
	require.NoError(t, err, ".dockerignore has an invalid pattern")
	return pm
}

func TestDockerignore(t *testing.T) {
	t.Parallel()
	pm := readDockerignore(t)

	t.Run("excludes what the image does not need", func(t *testing.T) {
		for _, p := range []string{".git/HEAD", "bin/worker", ".tmp/x"} {
			excluded, err := pm.MatchesOrParentMatches(p)
			require.NoError(t, err)
			require.True(t, excluded, ".dockerignore does not exclude %s", p)
		}
	})

	t.Run("keeps what go build needs", func(t *testing.T) {
		need := []string{"go.mod", "go.sum"}
		args := []string{"list", "-deps", "-json=ImportPath,Dir,GoFiles,EmbedFiles,Module"}
		for _, name := range commands() {
			args = append(args, "./cmd/"+name)
		}
		cmd := exec.Command("go", args...)
		cmd.Env = append(os.Environ(), "GOOS=linux", "CGO_ENABLED=0") // as in the image
		out, err := cmd.Output()
		require.NoError(t, err, "go list: %s", stderrOf(err))
		root, err := filepath.Abs(".")
		require.NoError(t, err)
		dec := json.NewDecoder(bytes.NewReader(out))
		for {
			var p struct {
				ImportPath string
				Dir        string
				GoFiles    []string
				EmbedFiles []string
				Module     *struct{ Main bool }
			}
			err := dec.Decode(&p)
			if errors.Is(err, io.EOF) {
				break
			}
			require.NoError(t, err)
			if p.Module == nil || !p.Module.Main {
				continue
			}
			rel, err := filepath.Rel(root, p.Dir)
			require.NoError(t, err)
			for _, f := range slices.Concat(p.GoFiles, p.EmbedFiles) {
				need = append(need, filepath.ToSlash(filepath.Join(rel, f)))
			}
		}
		require.Greater(t, len(need), 10, "go list found too few files; is the module layout what the test expects?")
		var excluded []string
		for _, f := range need {
			ex, err := pm.MatchesOrParentMatches(f)
			require.NoError(t, err)
			if ex {
				excluded = append(excluded, f)
			}
		}
		require.Empty(t, excluded, ".dockerignore excludes files that go build of the image needs")
	})
}

func stderrOf(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(ee.Stderr)
	}
	return ""
}

// --- command sources ----------------------------------------------------------

// cmdFlag is a flag that a command defines with the flag package.
type cmdFlag struct {
	name string
	// kind is the flag's type: Bool, Int, Int64, Uint, Uint64, String,
	// Float64, Duration, Text, Value, Func or BoolFunc.
	kind string
	// simField is the field of sim.Config that the flag sets
	// (&o.sim.Field), or "".
	simField string
	// def is the default as flag.Value.Set accepts it, if the source gives
	// it as a constant the test can evaluate.
	def    string
	hasDef bool
}

// cmdSource is what the tests read from the non-test Go files of a command.
type cmdSource struct {
	dir     string
	flags   map[string]cmdFlag
	strings map[string]bool   // every string literal
	consts  map[string]string // string constants by name
	refs    map[string]bool   // every qualified identifier, e.g. config.NATSSettings
	found   bool              // for readFunc: the function exists
}

// sharedSettings returns the settings of the config package's table that a
// command other than the worker reads with config.ParseSettings: the NATS
// connection's when it refers to config.NATSSettings, and every setting whose
// name (without the PAYSTREAM_ prefix) it spells.
func (s cmdSource) sharedSettings() []string {
	var names []string
	if s.refs["config.NATSSettings"] {
		names = append(names, config.NATSSettings()...)
	}
	for _, v := range config.Vars() {
		if name := strings.TrimPrefix(v, config.EnvPrefix+"_"); s.strings[name] {
			names = append(names, name)
		}
	}
	return names
}

// flagDefiner tells whether method is a flag.FlagSet method (or flag
// package function) that defines a flag, its kind and which argument is the
// name.
func flagDefiner(method string) (kind string, nameArg int, ok bool) {
	switch method {
	case "BoolVar", "IntVar", "Int64Var", "UintVar", "Uint64Var", "StringVar", "Float64Var", "DurationVar", "TextVar":
		return strings.TrimSuffix(method, "Var"), 1, true
	case "Var":
		return "Value", 1, true
	case "Bool", "Int", "Int64", "Uint", "Uint64", "String", "Float64", "Duration", "Func", "BoolFunc":
		return method, 0, true
	}
	return "", 0, false
}

// readCmd parses the non-test Go files of dir and collects its flags, string
// literals and string constants.
func readCmd(t *testing.T, dir string) cmdSource {
	t.Helper()
	src := readSource(t, dir, "")
	require.NotEmpty(t, src.flags, "%s defines no flags with the flag package; update deploy_test.go", dir)
	return src
}

// readFunc is readCmd restricted to the function fn of dir (its body and
// the closures in it), e.g. the settings and flags of one subcommand. It
// fails when dir has no function fn.
func readFunc(t *testing.T, dir, fn string) cmdSource {
	t.Helper()
	src := readSource(t, dir, fn)
	require.True(t, src.found, "%s has no function %s; update deploy_test.go", dir, fn)
	return src
}

// readSource collects what readCmd describes from the whole of dir, or
// only from function fn when fn is not empty.
func readSource(t *testing.T, dir, fn string) cmdSource {
	t.Helper()
	src := cmdSource{dir: dir, flags: map[string]cmdFlag{}, strings: map[string]bool{}, consts: map[string]string{}, refs: map[string]bool{}}
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	fset := token.NewFileSet()
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".go") || strings.HasSuffix(e.Name(), "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, filepath.Join(dir, e.Name()), nil, 0)
		require.NoError(t, err)
		var root ast.Node = file
		if fn != "" {
			root = nil
			for _, d := range file.Decls {
				if f, ok := d.(*ast.FuncDecl); ok && f.Recv == nil && f.Name.Name == fn {
					root = f
				}
			}
			if root == nil {
				continue
			}
		}
		src.found = true
		ast.Inspect(root, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.BasicLit:
				if s, err := strconv.Unquote(n.Value); n.Kind == token.STRING && err == nil {
					src.strings[s] = true
				}
			case *ast.SelectorExpr:
				if id, ok := n.X.(*ast.Ident); ok {
					src.refs[id.Name+"."+n.Sel.Name] = true
				}
			case *ast.ValueSpec:
				for i, name := range n.Names {
					if i < len(n.Values) {
						if lit, ok := n.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
							src.consts[name.Name], _ = strconv.Unquote(lit.Value)
						}
					}
				}
			case *ast.CallExpr:
				sel, ok := n.Fun.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				kind, nameArg, ok := flagDefiner(sel.Sel.Name)
				if !ok || len(n.Args) <= nameArg+1 {
					return true
				}
				lit, ok := n.Args[nameArg].(*ast.BasicLit)
				require.True(t, ok && lit.Kind == token.STRING, "%s: %s: flag name is not a string literal; update deploy_test.go", dir, fset.Position(n.Pos()))
				name, _ := strconv.Unquote(lit.Value)
				f := cmdFlag{name: name, kind: kind}
				if nameArg == 1 {
					f.simField = simField(n.Args[0])
				}
				if len(n.Args) > nameArg+1 && kind != "Value" && kind != "Func" && kind != "BoolFunc" {
					f.def, f.hasDef = evalDefault(n.Args[nameArg+1])
				}
				src.flags[name] = f
			}
			return true
		})
	}
	return src
}

// simField returns Field for the expression &<x>.sim.Field, else "".
func simField(e ast.Expr) string {
	u, ok := e.(*ast.UnaryExpr)
	if !ok || u.Op != token.AND {
		return ""
	}
	field, ok := u.X.(*ast.SelectorExpr)
	if !ok {
		return ""
	}
	parent, ok := field.X.(*ast.SelectorExpr)
	if !ok || parent.Sel.Name != "sim" {
		return ""
	}
	return field.Sel.Name
}

// evalDefault evaluates a flag default written as a literal, true/false, a
// time unit or <integer>*<time unit>.
func evalDefault(e ast.Expr) (string, bool) {
	unit := func(e ast.Expr) (time.Duration, bool) {
		sel, ok := e.(*ast.SelectorExpr)
		if !ok {
			return 0, false
		}
		if id, ok := sel.X.(*ast.Ident); !ok || id.Name != "time" {
			return 0, false
		}
		d, ok := map[string]time.Duration{
			"Nanosecond": time.Nanosecond, "Microsecond": time.Microsecond, "Millisecond": time.Millisecond,
			"Second": time.Second, "Minute": time.Minute, "Hour": time.Hour,
		}[sel.Sel.Name]
		return d, ok
	}
	switch e := e.(type) {
	case *ast.BasicLit:
		if e.Kind == token.STRING {
			s, err := strconv.Unquote(e.Value)
			return s, err == nil
		}
		return e.Value, true
	case *ast.Ident:
		if e.Name == "true" || e.Name == "false" {
			return e.Name, true
		}
	case *ast.SelectorExpr:
		if d, ok := unit(e); ok {
			return d.String(), true
		}
	case *ast.BinaryExpr:
		lit, ok := e.X.(*ast.BasicLit)
		d, ok2 := unit(e.Y)
		if e.Op == token.MUL && ok && ok2 && lit.Kind == token.INT {
			n, err := strconv.ParseInt(lit.Value, 0, 64)
			return (time.Duration(n) * d).String(), err == nil
		}
	}
	return "", false
}

// flagValue is a flag.Value that checks a value like the command's flag of
// the same kind would.
type flagValue struct {
	kind string
	val  string
}

func (v *flagValue) String() string { return v.val }

func (v *flagValue) Set(s string) error {
	var err error
	switch v.kind {
	case "Bool":
		_, err = strconv.ParseBool(s)
	case "Int":
		_, err = strconv.ParseInt(s, 0, strconv.IntSize)
	case "Int64":
		_, err = strconv.ParseInt(s, 0, 64)
	case "Uint":
		_, err = strconv.ParseUint(s, 0, strconv.IntSize)
	case "Uint64":
		_, err = strconv.ParseUint(s, 0, 64)
	case "Float64":
		_, err = strconv.ParseFloat(s, 64)
	case "Duration":
		_, err = time.ParseDuration(s)
	}
	if err != nil {
		return err
	}
	v.val = s
	return nil
}

func (v *flagValue) IsBoolFlag() bool { return v.kind == "Bool" || v.kind == "BoolFunc" }

// flagSet returns a flag set holding the command's flags, and their values.
func (s cmdSource) flagSet() (*flag.FlagSet, map[string]*flagValue) {
	fs := flag.NewFlagSet(s.dir, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	values := map[string]*flagValue{}
	for name, f := range s.flags {
		v := &flagValue{kind: f.kind}
		if f.hasDef {
			v.val = f.def
		}
		values[name] = v
		fs.Var(v, name, "")
	}
	return fs, values
}

// parseFlags parses args with a flag set holding the command's flags and
// returns the value of every flag.
func (s cmdSource) parseFlags(args []string) (*flag.FlagSet, map[string]*flagValue, error) {
	fs, values := s.flagSet()
	if err := fs.Parse(args); err != nil {
		return nil, nil, err
	}
	if fs.NArg() > 0 {
		return nil, nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return fs, values, nil
}

// --- docker-compose.yml ---------------------------------------------------------

func loadProject(t *testing.T, profiles ...string) *types.Project {
	t.Helper()
	root, err := filepath.Abs(".")
	require.NoError(t, err)
	// No OS environment and no .env file: the result does not depend on
	// the machine. Interpolated values take their defaults.
	opts, err := cli.NewProjectOptions([]string{filepath.Join(root, composeFile)},
		cli.WithWorkingDirectory(root),
		cli.WithProfiles(profiles),
	)
	require.NoError(t, err)
	p, err := opts.LoadProject(t.Context())
	require.NoError(t, err, "%s does not load with the Compose loader (profiles %q)", composeFile, profiles)
	return p
}

// service returns the service name, failing if it is missing.
func service(t *testing.T, p *types.Project, name string) types.ServiceConfig {
	t.Helper()
	s, ok := p.Services[name]
	require.True(t, ok, "%s: no service %q (services: %q)", composeFile, name, p.ServiceNames())
	return s
}

// lookupEnv looks up a variable of a service's environment.
func lookupEnv(env types.MappingWithEquals) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := env[k]
		if !ok || v == nil {
			return "", false
		}
		return *v, true
	}
}

// builtHere reports whether s is built from this repository's Dockerfile.
func builtHere(t *testing.T, s types.ServiceConfig) bool {
	t.Helper()
	if s.Build == nil {
		return false
	}
	root, err := filepath.Abs(".")
	require.NoError(t, err)
	df := s.Build.Dockerfile
	if df == "" {
		df = dockerfileName
	}
	if !filepath.IsAbs(df) {
		df = filepath.Join(s.Build.Context, df)
	}
	return filepath.Clean(s.Build.Context) == root && filepath.Clean(df) == filepath.Join(root, dockerfileName)
}

// binaryOf returns which of commands() service s runs, or "" for a service
// not built from the Dockerfile.
func binaryOf(t *testing.T, im image, s types.ServiceConfig) string {
	t.Helper()
	if !builtHere(t, s) {
		return ""
	}
	entry := []string(s.Entrypoint)
	if len(entry) == 0 {
		require.NotNil(t, im.entrypoint)
		entry = im.entrypoint.CmdLine
	}
	bin := path.Base(entry[0])
	_, ok := im.binaries[bin]
	require.True(t, ok, "%s: service %s: entrypoint %q is not a binary of the image (%s)", composeFile, s.Name, entry, imageBinDir)
	require.Contains(t, []string{bin, imageBinDir + "/" + bin}, entry[0], "%s: service %s: entrypoint %q", composeFile, s.Name, entry)
	return bin
}

// networks returns the networks of s.
func networks(s types.ServiceConfig) []string {
	if len(s.Networks) == 0 {
		return []string{"default"}
	}
	var ns []string
	for n := range s.Networks {
		ns = append(ns, n)
	}
	return ns
}

// requireReachable checks that from can reach service to by its name.
func requireReachable(t *testing.T, p *types.Project, from types.ServiceConfig, to string) {
	t.Helper()
	target := service(t, p, to)
	shared := false
	for _, n := range networks(from) {
		shared = shared || slices.Contains(networks(target), n)
	}
	require.True(t, shared, "%s: services %s and %s share no network", composeFile, from.Name, to)
}

// splitHostPort splits a host:port listen address or URL host.
func splitHostPort(t *testing.T, what, hostport string) (string, int) {
	t.Helper()
	host, port, err := net.SplitHostPort(hostport)
	require.NoError(t, err, "%s %q", what, hostport)
	n, err := strconv.Atoi(port)
	require.NoError(t, err, "%s %q: port", what, hostport)
	return host, n
}

// natsConf is the NATS service and the configuration it runs with.
type natsConf struct {
	svc  types.ServiceConfig
	opts *server.Options
	port int // client port
}

// readNATS finds the configuration file that the nats service runs with,
// parses it with nats-server's own parser and returns it.
func readNATS(t *testing.T, p *types.Project) natsConf {
	t.Helper()
	s := service(t, p, natsService)
	args := []string(s.Command)
	if len(args) > 0 && args[0] == "nats-server" {
		args = args[1:]
	}
	var conf string
	switch {
	case len(args) == 2 && slices.Contains([]string{"-c", "--config", "-config"}, args[0]):
		conf = args[1]
	case len(args) == 1 && (strings.HasPrefix(args[0], "--config=") || strings.HasPrefix(args[0], "-c=")):
		_, conf, _ = strings.Cut(args[0], "=")
	default:
		require.Fail(t, "nats service: command must be just --config <file>",
			"%s: got %q; flags would override the file, and this test checks only the file", composeFile, s.Command)
	}
	var source string
	for _, v := range s.Volumes {
		if v.Target == conf {
			require.Equal(t, types.VolumeTypeBind, v.Type, "nats service: %s must be a bind mount of a file of this repository", conf)
			source = v.Source
		}
	}
	require.NotEmpty(t, source, "nats service: nothing is mounted at %s, the --config file", conf)
	root, err := filepath.Abs(".")
	require.NoError(t, err)
	rel, err := filepath.Rel(root, source)
	require.NoError(t, err)
	require.False(t, strings.HasPrefix(rel, ".."), "nats service: %s is mounted from %s, outside the repository", conf, source)

	var opts server.Options
	// Unlike server.ProcessConfigFile, fail on warnings too.
	require.NoError(t, opts.ProcessConfigFile(rel), "nats service: nats-server rejects %s", rel)
	port := opts.Port
	if port == 0 {
		port = natsDefaultPort
	}
	return natsConf{svc: s, opts: &opts, port: port}
}

// requireNATSURLs checks that every NATS URL points at the nats service's
// client port.
func requireNATSURLs(t *testing.T, p *types.Project, from types.ServiceConfig, nc natsConf, urls []string) {
	t.Helper()
	require.NotEmpty(t, urls, "service %s has no NATS URL", from.Name)
	for _, raw := range urls {
		u, err := url.Parse(strings.TrimSpace(raw))
		require.NoError(t, err, "service %s: NATS URL %q", from.Name, raw)
		require.Equal(t, natsService, u.Hostname(), "service %s: NATS URL %q does not point at the %s service", from.Name, raw, natsService)
		port := natsDefaultPort
		if u.Port() != "" {
			port, err = strconv.Atoi(u.Port())
			require.NoError(t, err)
		}
		require.Equal(t, nc.port, port, "service %s: NATS URL %q: the nats service listens on port %d", from.Name, raw, nc.port)
	}
	requireReachable(t, p, from, natsService)
}

// gatewaysimListen returns the address that the gatewaysim service listens
// on, after checking its command and environment against cmd/gatewaysim's
// flags and sim.Config.Validate.
func gatewaysimListen(t *testing.T, gs cmdSource, s types.ServiceConfig) (addr string, shutdown time.Duration) {
	t.Helper()
	prefix, ok := gs.consts["envPrefix"]
	require.True(t, ok && prefix != "", "cmd/gatewaysim declares no envPrefix constant; update deploy_test.go")

	fs, values, err := gs.parseFlags(s.Command)
	require.NoError(t, err, "gatewaysim service: command %q does not parse with gatewaysim's flags", s.Command)
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	envOf := func(name string) string { return prefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_")) }
	for name := range gs.flags {
		if v, ok := lookupEnv(s.Environment)(envOf(name)); ok && v != "" && !given[name] {
			require.NoError(t, fs.Set(name, v), "gatewaysim service: %s=%q", envOf(name), v)
		}
	}

	// The simulator's own validation, on the sim.Config the flags build.
	var cfg sim.Config
	rv := reflect.ValueOf(&cfg).Elem()
	mapped := 0
	for name, f := range gs.flags {
		if f.simField == "" {
			continue
		}
		field := rv.FieldByName(f.simField)
		require.True(t, field.IsValid(), "cmd/gatewaysim: flag --%s sets sim.Config.%s, which does not exist", name, f.simField)
		mapped++
		val := values[name].val
		if val == "" {
			continue // zero: the simulator's default
		}
		switch {
		case field.Type() == reflect.TypeFor[time.Duration]():
			d, err := time.ParseDuration(val)
			require.NoError(t, err)
			field.SetInt(int64(d))
		case field.CanFloat():
			x, err := strconv.ParseFloat(val, 64)
			require.NoError(t, err)
			field.SetFloat(x)
		case field.CanInt():
			x, err := strconv.ParseInt(val, 0, 64)
			require.NoError(t, err)
			field.SetInt(x)
		default:
			require.Fail(t, "unexpected sim.Config field type", "%s: %s", f.simField, field.Type())
		}
	}
	require.NotZero(t, mapped, "no flag of cmd/gatewaysim sets a sim.Config field (&o.sim.X); update deploy_test.go")
	require.NoError(t, cfg.Validate(), "gatewaysim service: invalid simulator settings")

	addr = values["addr"].val
	require.NotEmpty(t, addr, "cmd/gatewaysim has no --addr flag with a literal default; update deploy_test.go")
	st := values["shutdown-timeout"]
	require.NotNil(t, st, "cmd/gatewaysim has no --shutdown-timeout flag; update deploy_test.go")
	shutdown, err = time.ParseDuration(st.val)
	require.NoError(t, err, "gatewaysim --shutdown-timeout %q", st.val)
	return addr, shutdown
}

// stopGrace returns how long Compose waits for s to stop before SIGKILL.
func stopGrace(s types.ServiceConfig) time.Duration {
	if s.StopGracePeriod == nil {
		return composeDefaultStopGrace
	}
	return time.Duration(*s.StopGracePeriod)
}

func TestComposeLoads(t *testing.T) {
	t.Parallel()
	p := loadProject(t, "*")
	im := readImage(t)

	for _, name := range []string{natsService, postgresService, gatewaysimService, workerService, publisherService, outboxMigrate, outboxRelay} {
		service(t, p, name)
	}
	for _, name := range p.ServiceNames() {
		s := p.Services[name]
		t.Run(name, func(t *testing.T) {
			require.True(t, s.Image != "" || s.Build != nil, "service %s has neither image nor build", name)
			if s.Build != nil {
				require.True(t, builtHere(t, s), "service %s: build must be the repository root with its Dockerfile, got context %q dockerfile %q",
					name, s.Build.Context, s.Build.Dockerfile)
				binaryOf(t, im, s)
				// The image has no shell and no HTTP client.
				if hc := s.HealthCheck; hc != nil && !hc.Disable && len(hc.Test) > 0 && hc.Test[0] != "NONE" {
					require.Equal(t, "CMD", hc.Test[0], "service %s: healthcheck %q needs a shell, which the image lacks", name, hc.Test)
					require.Greater(t, len(hc.Test), 1)
					_, ok := im.binaries[path.Base(hc.Test[1])]
					require.True(t, ok, "service %s: healthcheck %q runs a program the image lacks", name, hc.Test)
				}
			}
			for _, v := range s.Volumes {
				if v.Type != types.VolumeTypeVolume {
					continue
				}
				require.NotEmpty(t, v.Source, "service %s: anonymous volume at %s: name it and declare it under volumes:", name, v.Target)
				_, ok := p.Volumes[v.Source]
				require.True(t, ok, "service %s: volume %s is not declared under volumes:", name, v.Source)
			}
			for dep, d := range s.DependsOn {
				target := service(t, p, dep)
				if d.Condition == types.ServiceConditionHealthy {
					hc := target.HealthCheck
					require.True(t, hc != nil && !hc.Disable && len(hc.Test) > 0 && hc.Test[0] != "NONE",
						"service %s waits for %s to be healthy, but %s has no healthcheck", name, dep, dep)
				}
			}
		})
	}
}

func TestComposeEnvironment(t *testing.T) {
	t.Parallel()
	p := loadProject(t, "*")
	known := map[string]bool{}
	for _, v := range config.Vars() {
		known[v] = true
	}
	gs := readCmd(t, "cmd/gatewaysim")
	prefix := gs.consts["envPrefix"]
	require.NotEmpty(t, prefix, "cmd/gatewaysim declares no envPrefix constant; update deploy_test.go")
	gsVars := map[string]bool{}
	for name := range gs.flags {
		gsVars[prefix+strings.ToUpper(strings.ReplaceAll(name, "-", "_"))] = true
	}

	var unknown []string
	for _, name := range p.ServiceNames() {
		for k := range p.Services[name].Environment {
			switch {
			case strings.HasPrefix(k, config.EnvPrefix+"_") && !known[k]:
				unknown = append(unknown, fmt.Sprintf("%s: %s is not a setting of the config package (config.Vars)", name, k))
			case strings.HasPrefix(k, prefix) && !gsVars[k]:
				unknown = append(unknown, fmt.Sprintf("%s: %s is not a flag of cmd/gatewaysim", name, k))
			}
		}
	}
	sort.Strings(unknown)
	require.Empty(t, unknown, "%s sets unknown variables", composeFile)
}

func TestComposeNATS(t *testing.T) {
	t.Parallel()
	p := loadProject(t, "*")
	nc := readNATS(t, p)
	mod := readGoMod(t)

	require.True(t, nc.opts.JetStream, "nats: the configuration does not enable JetStream")
	require.True(t, nc.opts.SyncAlways,
		"nats: a single node must fsync every write (jetstream { sync_interval: always }): docs/contract.md §11.13")
	require.NotEmpty(t, nc.opts.StoreDir, "nats: JetStream has no store_dir")
	onVolume := false
	for _, v := range nc.svc.Volumes {
		onVolume = onVolume || (v.Type == types.VolumeTypeVolume && v.Target == nc.opts.StoreDir && v.Source != "")
	}
	require.True(t, onVolume, "nats: store_dir %s is not on a named volume: streams would not survive a new container", nc.opts.StoreDir)

	require.NotZero(t, nc.opts.HTTPPort, "nats: the configuration sets no monitoring http_port")
	hc := nc.svc.HealthCheck
	require.NotNil(t, hc, "nats: no healthcheck")
	var probe *url.URL
	for _, a := range hc.Test {
		if strings.Contains(a, "/healthz") {
			u, err := url.Parse(a[strings.Index(a, "http"):])
			require.NoError(t, err, "nats healthcheck URL %q", a)
			probe = u
		}
	}
	require.NotNil(t, probe, "nats: the healthcheck %q does not probe /healthz", hc.Test)
	require.Equal(t, strconv.Itoa(nc.opts.HTTPPort), probe.Port(), "nats: the healthcheck probes port %s, the monitoring port is %d", probe.Port(), nc.opts.HTTPPort)
	require.Equal(t, "true", probe.Query().Get("js-enabled-only"), "nats: the healthcheck should ask /healthz?js-enabled-only=true")

	for _, port := range nc.svc.Ports {
		require.Contains(t, []uint32{uint32(nc.port), uint32(nc.opts.HTTPPort)}, port.Target,
			"nats: publishes container port %d, which the server does not listen on", port.Target)
	}

	// The server that compose runs is the release the tests run in-process.
	version := mod.require["github.com/nats-io/nats-server/v2"]
	require.NotEmpty(t, version, "go.mod does not require nats-server")
	minor := strings.Join(strings.SplitN(strings.TrimPrefix(version, "v"), ".", 3)[:2], ".")
	_, tag, ok := strings.Cut(nc.svc.Image, ":")
	require.True(t, ok, "nats: image %q has no tag", nc.svc.Image)
	require.True(t, tag == minor || strings.HasPrefix(tag, minor+".") || strings.HasPrefix(tag, minor+"-"),
		"nats: image %s is not nats-server %s, the release go.mod tests with (%s)", nc.svc.Image, minor, version)
}

func TestComposePostgres(t *testing.T) {
	t.Parallel()
	p := loadProject(t, "*")
	s := service(t, p, postgresService)
	env := lookupEnv(s.Environment)

	hc := s.HealthCheck
	require.True(t, hc != nil && !hc.Disable && len(hc.Test) > 1, "postgres: no healthcheck")
	require.True(t, slices.ContainsFunc(hc.Test, func(a string) bool { return strings.Contains(a, "pg_isready") }),
		"postgres: the healthcheck %q does not run pg_isready", hc.Test)

	data := postgresDefaultData
	if v, ok := env("PGDATA"); ok {
		data = v
	}
	onVolume := false
	for _, v := range s.Volumes {
		onVolume = onVolume || (v.Type == types.VolumeTypeVolume && v.Source != "" && (v.Target == data || strings.HasPrefix(data, v.Target+"/")))
	}
	require.True(t, onVolume, "postgres: the data directory %s is not on a named volume", data)
	db, ok := env("POSTGRES_DB")
	require.True(t, ok && db == "paystream", "postgres: POSTGRES_DB must be paystream, got %q", db)
}

func TestComposeWorker(t *testing.T) {
	t.Parallel()
	p := loadProject(t, "*")
	im := readImage(t)
	s := service(t, p, workerService)
	require.Equal(t, "worker", binaryOf(t, im, s), "the worker service does not run the worker")

	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfg, err := config.Parse(fs, s.Command, lookupEnv(s.Environment))
	require.NoError(t, err, "worker service: command %q with its environment is not a valid worker configuration", s.Command)
	require.Zero(t, fs.NArg(), "worker service: command %q has arguments the worker does not take (the migrate subcommand exits)", s.Command)
	require.True(t, cfg.Migrate, "worker service: without --migrate (PAYSTREAM_MIGRATE) nothing creates the tables")

	t.Run("replicas", func(t *testing.T) {
		require.NotNil(t, s.Deploy, "worker: no deploy section")
		require.NotNil(t, s.Deploy.Replicas, "worker: no deploy.replicas")
		require.Equal(t, 3, *s.Deploy.Replicas, "worker: deploy.replicas")
		require.Empty(t, s.ContainerName, "worker: container_name forbids more than one replica")
		for _, port := range s.Ports {
			require.Empty(t, port.Published, "worker: fixed host port %s: replicas cannot share one; use expose", port.Published)
		}
		require.Contains(t, []string{"always", "unless-stopped", "on-failure"}, strings.SplitN(s.Restart, ":", 2)[0],
			"worker: restart %q does not restart a crashed worker", s.Restart)
	})

	t.Run("depends_on", func(t *testing.T) {
		for _, dep := range []string{natsService, postgresService} {
			d, ok := s.DependsOn[dep]
			require.True(t, ok, "worker does not depend on %s", dep)
			require.Equal(t, types.ServiceConditionHealthy, d.Condition, "worker must wait for %s to be healthy", dep)
		}
		_, ok := s.DependsOn[gatewaysimService]
		require.True(t, ok, "worker does not depend on %s", gatewaysimService)
	})

	t.Run("nats", func(t *testing.T) {
		requireNATSURLs(t, p, s, readNATS(t, p), cfg.NATSURLs)
	})

	t.Run("postgres", func(t *testing.T) {
		requirePostgresURL(t, p, s, cfg.DatabaseURL)
	})

	t.Run("gateway", func(t *testing.T) {
		gs := service(t, p, gatewaysimService)
		require.Equal(t, "gatewaysim", binaryOf(t, im, gs), "the gatewaysim service does not run gatewaysim")
		addr, _ := gatewaysimListen(t, readCmd(t, "cmd/gatewaysim"), gs)
		_, port := splitHostPort(t, "gatewaysim listen address", addr)
		u, err := url.Parse(cfg.GatewayURL)
		require.NoError(t, err)
		require.Equal(t, "http", u.Scheme, "worker: PAYSTREAM_GATEWAY_URL %q", cfg.GatewayURL)
		require.Equal(t, gatewaysimService, u.Hostname(), "worker: PAYSTREAM_GATEWAY_URL %q does not point at the %s service", cfg.GatewayURL, gatewaysimService)
		require.Equal(t, strconv.Itoa(port), orDefault(u.Port(), "80"), "worker: PAYSTREAM_GATEWAY_URL %q: gatewaysim listens on %s", cfg.GatewayURL, addr)
		requireReachable(t, p, s, gatewaysimService)
	})

	t.Run("http", func(t *testing.T) {
		require.NotEmpty(t, cfg.HTTPAddr, "worker: the HTTP server (/healthz, /readyz, /metrics) is disabled")
		host, port := splitHostPort(t, "PAYSTREAM_HTTP_ADDR", cfg.HTTPAddr)
		require.Contains(t, []string{"", "0.0.0.0", "::"}, host, "worker: PAYSTREAM_HTTP_ADDR %q is not reachable from other containers", cfg.HTTPAddr)
		require.Contains(t, []string(s.Expose), strconv.Itoa(port), "worker: expose does not list the HTTP port %d", port)
	})

	t.Run("stop_grace_period", func(t *testing.T) {
		require.Greater(t, stopGrace(s), cfg.ShutdownTimeout,
			"worker: stop_grace_period %s must exceed PAYSTREAM_SHUTDOWN_TIMEOUT %s, or SIGKILL cuts the drain short", stopGrace(s), cfg.ShutdownTimeout)
	})
}

func TestComposeGatewaysim(t *testing.T) {
	t.Parallel()
	p := loadProject(t, "*")
	s := service(t, p, gatewaysimService)
	for k := range s.Environment {
		require.False(t, strings.HasPrefix(k, config.EnvPrefix+"_"), "gatewaysim ignores %s", k)
	}
	addr, shutdown := gatewaysimListen(t, readCmd(t, "cmd/gatewaysim"), s)
	host, port := splitHostPort(t, "gatewaysim listen address", addr)
	require.Contains(t, []string{"", "0.0.0.0", "::"}, host, "gatewaysim listens on %s, unreachable from the workers' containers (GATEWAYSIM_ADDR=0.0.0.0:PORT)", addr)
	for _, pc := range s.Ports {
		require.Equal(t, uint32(port), pc.Target, "gatewaysim: publishes container port %d; it listens on %d", pc.Target, port)
	}
	require.Greater(t, stopGrace(s), shutdown, "gatewaysim: stop_grace_period %s must exceed its shutdown timeout %s", stopGrace(s), shutdown)
}

func TestComposePublisher(t *testing.T) {
	t.Parallel()

	t.Run("only in the tools profile", func(t *testing.T) {
		all := loadProject(t, "*")
		s := service(t, all, publisherService)
		require.Equal(t, []string{"tools"}, s.Profiles, "publisher: profiles")
		for _, name := range all.ServiceNames() {
			profiles := all.Services[name].Profiles
			if name == publisherService || slices.Equal(profiles, []string{clusterProfile}) ||
				slices.Equal(profiles, []string{observabilityProfile}) {
				continue
			}
			require.Empty(t, profiles, "service %s must start with a plain `docker compose up`", name)
		}

		def := loadProject(t)
		_, enabled := def.Services[publisherService]
		require.False(t, enabled, "publisher starts without --profile tools")
		_, disabled := def.DisabledServices[publisherService]
		require.True(t, disabled, "publisher is not a disabled service of the default profile")

		tools := loadProject(t, "tools")
		_, enabled = tools.Services[publisherService]
		require.True(t, enabled, "publisher does not start with --profile tools")
	})

	t.Run("command and environment", func(t *testing.T) {
		p := loadProject(t, "*")
		im := readImage(t)
		s := service(t, p, publisherService)
		require.Equal(t, "publisher", binaryOf(t, im, s), "the publisher service does not run the publisher")

		// The publisher's own flags come from its source, the settings it
		// shares with the worker from config's table, which parses them.
		src := readCmd(t, "cmd/publisher")
		shared := src.sharedSettings()
		require.Contains(t, shared, "NATS_URL", "cmd/publisher reads no NATS settings from config; update deploy_test.go")
		fs, _ := src.flagSet()
		cfg, err := config.ParseSettings(fs, s.Command, lookupEnv(s.Environment), shared...)
		require.NoError(t, err, "publisher service: command %q and environment do not parse with the publisher's flags and settings", s.Command)
		require.Zero(t, fs.NArg(), "publisher service: unexpected arguments in %q", s.Command)
		reads := map[string]bool{}
		for _, name := range shared {
			reads[config.EnvPrefix+"_"+name] = true
		}
		for k := range s.Environment {
			if strings.HasPrefix(k, config.EnvPrefix+"_") {
				require.True(t, src.strings[k] || reads[k], "publisher service: the publisher does not read %s", k)
			}
		}
		requireNATSURLs(t, p, s, readNATS(t, p), cfg.NATSURLs)
		d, ok := s.DependsOn[natsService]
		require.True(t, ok && d.Condition == types.ServiceConditionHealthy, "publisher must wait for nats to be healthy")
	})
}

// parseSubcommand parses the command of service s, which runs `publisher
// <sub...> [flags]`, as the publisher does: with the flags defined in the
// function flagsFunc of cmd/publisher and the config settings that the
// function settingsFunc names. It returns the configuration and the
// settings read.
func parseSubcommand(t *testing.T, s types.ServiceConfig, sub []string, flagsFunc, settingsFunc string) (config.Config, []string) {
	t.Helper()
	cmd := []string(s.Command)
	require.GreaterOrEqual(t, len(cmd), len(sub), "%s: command %q does not run `publisher %s`", s.Name, cmd, strings.Join(sub, " "))
	require.Equal(t, sub, cmd[:len(sub)], "%s: command %q does not run `publisher %s`", s.Name, cmd, strings.Join(sub, " "))
	settings := readFunc(t, "cmd/publisher", settingsFunc).sharedSettings()
	require.Contains(t, settings, "DATABASE_URL", "cmd/publisher %s names no DATABASE_URL; update deploy_test.go", settingsFunc)
	fs, _ := readFunc(t, "cmd/publisher", flagsFunc).flagSet()
	cfg, err := config.ParseSettings(fs, cmd[len(sub):], lookupEnv(s.Environment), settings...)
	require.NoError(t, err, "%s: command %q and environment do not parse with the settings and flags of `publisher %s`", s.Name, cmd, strings.Join(sub, " "))
	require.Zero(t, fs.NArg(), "%s: unexpected arguments in %q", s.Name, cmd)
	reads := map[string]bool{}
	for _, name := range settings {
		reads[config.EnvPrefix+"_"+name] = true
	}
	for k := range s.Environment {
		if strings.HasPrefix(k, config.EnvPrefix+"_") {
			require.True(t, reads[k], "%s: `publisher %s` does not read %s", s.Name, strings.Join(sub, " "), k)
		}
	}
	return cfg, settings
}

// TestComposeOutbox checks the outbox services: outbox-migrate creates the
// outbox table in the database that outbox-relay relays from, and the relay
// starts after it, with a command that `publisher outbox relay` accepts.
func TestComposeOutbox(t *testing.T) {
	t.Parallel()
	p := loadProject(t, "*")
	im := readImage(t)
	mig := service(t, p, outboxMigrate)
	rel := service(t, p, outboxRelay)
	require.Equal(t, "publisher", binaryOf(t, im, mig), "%s does not run the publisher", outboxMigrate)
	require.Equal(t, "publisher", binaryOf(t, im, rel), "%s does not run the publisher", outboxRelay)

	migCfg, _ := parseSubcommand(t, mig, []string{"outbox", "migrate"}, "outboxMigrate", "migrateSettings")
	relCfg, relSettings := parseSubcommand(t, rel, []string{"outbox", "relay"}, "outboxRelay", "relaySettings")

	t.Run("database", func(t *testing.T) {
		requirePostgresURL(t, p, mig, migCfg.DatabaseURL)
		requirePostgresURL(t, p, rel, relCfg.DatabaseURL)
		require.Equal(t, migCfg.DatabaseURL, relCfg.DatabaseURL, "%s migrates another database than %s relays from", outboxMigrate, outboxRelay)
		d, ok := mig.DependsOn[postgresService]
		require.True(t, ok && d.Condition == types.ServiceConditionHealthy, "%s must wait for postgres to be healthy", outboxMigrate)
		d, ok = rel.DependsOn[outboxMigrate]
		require.True(t, ok && d.Condition == types.ServiceConditionCompletedSuccessfully,
			"%s must start after %s completed successfully, or it relays from a table that does not exist yet", outboxRelay, outboxMigrate)
		require.NotContains(t, []string{"always", "unless-stopped"}, strings.SplitN(mig.Restart, ":", 2)[0],
			"%s: restart %q runs a one-shot job for ever", outboxMigrate, mig.Restart)
	})

	t.Run("nats", func(t *testing.T) {
		require.Subset(t, relSettings, config.NATSSettings(), "outbox relay does not read the NATS settings")
		requireNATSURLs(t, p, rel, readNATS(t, p), relCfg.NATSURLs)
		d, ok := rel.DependsOn[natsService]
		require.True(t, ok && d.Condition == types.ServiceConditionHealthy, "%s must wait for nats to be healthy", outboxRelay)
		_, ok = rel.DependsOn[workerService]
		require.True(t, ok, "%s must start after the workers, which create the PAYMENTS stream", outboxRelay)
	})

	t.Run("http", func(t *testing.T) {
		require.NotEmpty(t, relCfg.HTTPAddr, "%s: the HTTP server (/healthz, /metrics) is disabled", outboxRelay)
		host, port := splitHostPort(t, "PAYSTREAM_HTTP_ADDR", relCfg.HTTPAddr)
		require.Contains(t, []string{"", "0.0.0.0", "::"}, host, "%s: PAYSTREAM_HTTP_ADDR %q is not reachable from other containers", outboxRelay, relCfg.HTTPAddr)
		require.Contains(t, []string(rel.Expose), strconv.Itoa(port), "%s: expose does not list the HTTP port %d", outboxRelay, port)
		require.Contains(t, []string{"always", "unless-stopped", "on-failure"}, strings.SplitN(rel.Restart, ":", 2)[0],
			"%s: restart %q does not restart a crashed relay", outboxRelay, rel.Restart)
	})
}

// requirePostgresURL checks that the database URL raw of service s points
// at the postgres service's database with its user and authentication.
func requirePostgresURL(t *testing.T, p *types.Project, s types.ServiceConfig, raw string) {
	t.Helper()
	pg := service(t, p, postgresService)
	pgEnv := lookupEnv(pg.Environment)
	u, err := url.Parse(raw)
	require.NoError(t, err, "%s: PAYSTREAM_DATABASE_URL must be a URL for this test", s.Name)
	require.Contains(t, []string{"postgres", "postgresql"}, u.Scheme, "%s: PAYSTREAM_DATABASE_URL %q", s.Name, raw)
	require.Equal(t, postgresService, u.Hostname(), "%s: PAYSTREAM_DATABASE_URL does not point at the %s service", s.Name, postgresService)
	port := postgresDefaultPort
	if v, ok := pgEnv("PGPORT"); ok {
		port, err = strconv.Atoi(v)
		require.NoError(t, err)
	}
	require.Equal(t, strconv.Itoa(port), orDefault(u.Port(), strconv.Itoa(postgresDefaultPort)), "%s: PAYSTREAM_DATABASE_URL port: postgres listens on %d", s.Name, port)
	db, _ := pgEnv("POSTGRES_DB")
	require.Equal(t, "/"+db, u.Path, "%s: PAYSTREAM_DATABASE_URL names another database than POSTGRES_DB", s.Name)
	user := "postgres"
	if v, ok := pgEnv("POSTGRES_USER"); ok {
		user = v
	}
	require.Equal(t, user, u.User.Username(), "%s: PAYSTREAM_DATABASE_URL user is not the postgres service's POSTGRES_USER", s.Name)
	if pw, ok := u.User.Password(); ok {
		want, _ := pgEnv("POSTGRES_PASSWORD")
		require.Equal(t, want, pw, "%s: PAYSTREAM_DATABASE_URL password is not POSTGRES_PASSWORD", s.Name)
	} else {
		method, _ := pgEnv("POSTGRES_HOST_AUTH_METHOD")
		require.Equal(t, "trust", method, "%s: PAYSTREAM_DATABASE_URL has no password, so postgres must use trust authentication", s.Name)
	}
	requireReachable(t, p, s, postgresService)
}

// orDefault returns a, or b if a is empty.
func orDefault(a, b string) string {
	if a == "" {
		return b
	}
	return a
}

// TestComposeImageVariables checks that the images of docker-compose.yml
// are chosen through PAYSTREAM_IMAGE, PAYSTREAM_NATS_IMAGE and
// PAYSTREAM_POSTGRES_IMAGE (make images builds offline equivalents; see
// docs/compose.md), one compose file for both, and that every service built
// here keeps its build section, so that `up --build` still works online.
// It also checks that the worker and gatewaysim services probe themselves
// with the binaries' healthcheck subcommands.
func TestComposeImageVariables(t *testing.T) {
	t.Parallel()
	root, err := filepath.Abs(".")
	require.NoError(t, err)
	vars := map[string]string{
		"PAYSTREAM_IMAGE":          "example/paystream:test",
		"PAYSTREAM_NATS_IMAGE":     "example/nats:test",
		"PAYSTREAM_POSTGRES_IMAGE": "example/postgres:test",
	}
	var env []string
	for k, v := range vars {
		env = append(env, k+"="+v)
	}
	opts, err := cli.NewProjectOptions([]string{filepath.Join(root, composeFile)},
		cli.WithWorkingDirectory(root), cli.WithProfiles([]string{"*"}), cli.WithEnv(env))
	require.NoError(t, err)
	p, err := opts.LoadProject(t.Context())
	require.NoError(t, err)
	defaults := loadProject(t, "*")

	require.Equal(t, vars["PAYSTREAM_NATS_IMAGE"], service(t, p, natsService).Image, "nats: image is not ${PAYSTREAM_NATS_IMAGE:-...}")
	require.Equal(t, vars["PAYSTREAM_POSTGRES_IMAGE"], service(t, p, postgresService).Image, "postgres: image is not ${PAYSTREAM_POSTGRES_IMAGE:-...}")
	require.True(t, strings.HasPrefix(service(t, defaults, postgresService).Image, "postgres:15"),
		"postgres: the default image %q is not the official postgres 15", service(t, defaults, postgresService).Image)
	for _, name := range p.ServiceNames() {
		s := p.Services[name]
		if !builtHere(t, s) {
			continue
		}
		require.Equal(t, vars["PAYSTREAM_IMAGE"], s.Image, "%s: image is not ${PAYSTREAM_IMAGE:-...}", name)
		require.Equal(t, "paystream:local", defaults.Services[name].Image, "%s: the default image", name)
	}

	for name, bin := range map[string]string{workerService: "worker", gatewaysimService: "gatewaysim"} {
		hc := service(t, p, name).HealthCheck
		require.NotNil(t, hc, "%s: no healthcheck", name)
		require.Equal(t, []string{"CMD", imageBinDir + "/" + bin, "healthcheck"}, []string(hc.Test), "%s: healthcheck", name)
		src := readSource(t, "cmd/"+bin, "")
		require.True(t, src.strings["healthcheck"], "cmd/%s has no healthcheck subcommand", bin)
	}
}

// TestComposeObservability checks the observability profile against the
// rest of the file: Prometheus and Grafana mount files that exist, and
// every target Prometheus scrapes is a service of the file on a port it
// exposes (deploy/observability/prometheus.yml).
func TestComposeObservability(t *testing.T) {
	t.Parallel()
	p := loadProject(t, observabilityProfile)
	for _, name := range []string{"prometheus", "grafana"} {
		s := service(t, p, name)
		require.Equal(t, []string{observabilityProfile}, s.Profiles, name)
		for _, v := range s.Volumes {
			_, err := os.Stat(v.Source)
			require.NoError(t, err, "%s mounts %s", name, v.Source)
		}
	}
	b, err := os.ReadFile("deploy/observability/prometheus.yml")
	require.NoError(t, err)
	var prom struct {
		Global        map[string]string `json:"global"`
		RuleFiles     []string          `json:"rule_files"`
		ScrapeConfigs []struct {
			JobName   string `json:"job_name"`
			DNSSDConf []struct {
				Names   []string `json:"names"`
				Type    string   `json:"type"`
				Port    int      `json:"port"`
				Refresh string   `json:"refresh_interval"`
			} `json:"dns_sd_configs"`
			StaticConfigs []struct {
				Targets []string `json:"targets"`
			} `json:"static_configs"`
		} `json:"scrape_configs"`
	}
	require.NoError(t, yaml.UnmarshalStrict(b, &prom, func(d *json.Decoder) *json.Decoder { return d }))
	mounted := map[string]bool{}
	for _, v := range service(t, p, "prometheus").Volumes {
		mounted[v.Target] = true
	}
	for _, f := range prom.RuleFiles {
		require.True(t, mounted[f], "rule file %s is mounted into prometheus", f)
	}
	exposes := func(svc string, port int) bool {
		s, ok := p.Services[svc]
		if !ok {
			return false
		}
		for _, e := range s.Expose {
			if e == strconv.Itoa(port) {
				return true
			}
		}
		return false
	}
	n := 0
	for _, sc := range prom.ScrapeConfigs {
		for _, d := range sc.DNSSDConf {
			for _, name := range d.Names {
				n++
				require.True(t, exposes(name, d.Port), "job %s scrapes %s:%d, which no service exposes", sc.JobName, name, d.Port)
			}
		}
		for _, st := range sc.StaticConfigs {
			for _, target := range st.Targets {
				host, port, err := net.SplitHostPort(target)
				require.NoError(t, err)
				if host == "127.0.0.1" {
					continue // Prometheus itself
				}
				n++
				pn, err := strconv.Atoi(port)
				require.NoError(t, err)
				require.True(t, exposes(host, pn), "job %s scrapes %s, which no service exposes", sc.JobName, target)
			}
		}
	}
	require.GreaterOrEqual(t, n, 2, "the workers and the relay are scraped")
}

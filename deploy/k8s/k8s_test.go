// Package k8s_test checks the Kubernetes manifests of deploy/k8s without a
// cluster: it builds every kustomization with kustomize's own library
// (krusty, the code behind `kubectl apply -k`), decodes every object
// strictly into its API type — k8s.io/api, prometheus-operator's
// monitoring/v1, and for KEDA's ScaledObject a local mirror of the
// keda.sh/v1alpha1 fields (see scaledObject) — so that an unknown or
// misspelt field fails, and checks the objects against each other and
// against the code: ports, probe paths (read from the routes of cmd/worker
// and cmd/publisher), settings (parsed with the config package), metric
// names (registered by package telemetry), stream and consumer names
// (package contract), and the termination grace period against the drain.
//
// TestChecksCanFail breaks each cross-reference in turn and expects the
// check to say so; TestScalingFormula evaluates the KEDA formula with expr,
// the expression language KEDA uses.
package k8s_test

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"math"
	"net"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/expr-lang/expr"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/paystream/paystream/config"
	"github.com/paystream/paystream/contract"
	"github.com/paystream/paystream/payment"
	"github.com/paystream/paystream/telemetry"
)

// The kustomizations under deploy/k8s. Every one is built and checked.
const (
	baseDir            = "base"
	relayDir           = "outbox-relay"
	exampleDir         = "overlays/example"
	exampleUpstreamDir = "overlays/example-upstream"
)

// Names the manifests give their objects.
const (
	workerName  = "paystream-worker"
	migrateName = "paystream-migrate"
	relayName   = "outbox-relay"
	relayMigr   = "outbox-migrate"
)

// measuredWorkerRSS is the largest resident set of a worker process seen in
// `make demo` (three workers, 20,000 payments; VmHWM from /proc, see
// docs/operations.md). The memory request must cover it.
var measuredWorkerRSS = resource.MustParse("37Mi")

// Fixed parts of the worker's stop, from cmd/worker (worker.run and
// connectNATS): the HTTP server's shutdown and the NATS connection's drain
// timeout. The grace period must cover them after the consumer's drain.
const (
	httpShutdown = 5 * time.Second
	natsDrain    = 10 * time.Second
)

// pendingVars are settings that the manifests set ahead of the config
// package: PAYSTREAM_GATEWAY_API_KEY_FILE is being added in another branch.
// The worker ignores unknown PAYSTREAM_* variables (config.Parse), so
// setting it early is harmless; once config.Vars lists it, it is checked
// like every other setting.
var pendingVars = map[string]bool{"PAYSTREAM_GATEWAY_API_KEY_FILE": true}

// fileVars are the settings whose value is the path of a file, which must
// lie in a mounted Secret.
var fileVars = []string{
	"PAYSTREAM_NATS_CREDS", "PAYSTREAM_NATS_TLS_CA", "PAYSTREAM_NATS_TLS_CERT", "PAYSTREAM_NATS_TLS_KEY",
	"PAYSTREAM_GATEWAY_API_KEY_FILE",
}

// relaySettings are the settings `publisher outbox relay` reads, taken from
// the source of relaySettings in cmd/publisher/outbox.go (package main
// cannot be imported): the string literals of its body, plus
// config.NATSSettings() when it calls that.
func relaySettings(t *testing.T) []string {
	t.Helper()
	file, err := parser.ParseFile(token.NewFileSet(), filepath.Join("..", "..", "cmd", "publisher", "outbox.go"), nil, 0)
	require.NoError(t, err)
	var names []string
	var found bool
	for _, decl := range file.Decls {
		fn, ok := decl.(*ast.FuncDecl)
		if !ok || fn.Name.Name != "relaySettings" {
			continue
		}
		found = true
		ast.Inspect(fn.Body, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.BasicLit:
				if v, err := strconv.Unquote(n.Value); err == nil && n.Kind == token.STRING {
					names = append(names, v)
				}
			case *ast.SelectorExpr:
				if x, ok := n.X.(*ast.Ident); ok && x.Name == "config" && n.Sel.Name == "NATSSettings" {
					names = append(names, config.NATSSettings()...)
				}
			}
			return true
		})
	}
	require.True(t, found, "no func relaySettings in cmd/publisher/outbox.go")
	require.Contains(t, names, "HTTP_ADDR")
	return names
}

// ---------------------------------------------------------------------------
// KEDA's ScaledObject, mirrored.
//
// github.com/kedacore/keda/v2 is not served by the module proxy this project
// uses (and would bring in most of KEDA). These types copy the JSON shape of
// keda.sh/v1alpha1 ScaledObject (apis/keda/v1alpha1/scaledobject_types.go and
// scaletriggers_types.go, as on KEDA's main branch in 2026) field for field, without status, and
// are decoded with unknown fields refused like the others. Trigger metadata
// is a free map in KEDA; triggerKeys lists the keys each scaler used here
// accepts, so that a misspelt key fails too.

type scaledObject struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              scaledObjectSpec `json:"spec"`
}

type scaledObjectSpec struct {
	ScaleTargetRef        *scaleTarget    `json:"scaleTargetRef"`
	PollingInterval       *int32          `json:"pollingInterval,omitempty"`
	InitialCooldownPeriod *int32          `json:"initialCooldownPeriod,omitempty"`
	CooldownPeriod        *int32          `json:"cooldownPeriod,omitempty"`
	IdleReplicaCount      *int32          `json:"idleReplicaCount,omitempty"`
	MinReplicaCount       *int32          `json:"minReplicaCount,omitempty"`
	MaxReplicaCount       *int32          `json:"maxReplicaCount,omitempty"`
	Advanced              *advancedConfig `json:"advanced,omitempty"`
	Triggers              []scaleTrigger  `json:"triggers"`
	Fallback              *fallback       `json:"fallback,omitempty"`
}

type fallback struct {
	FailureThreshold int32  `json:"failureThreshold"`
	Replicas         int32  `json:"replicas"`
	Behavior         string `json:"behavior,omitempty"`
}

type advancedConfig struct {
	HorizontalPodAutoscalerConfig *hpaConfig       `json:"horizontalPodAutoscalerConfig,omitempty"`
	RestoreToOriginalReplicaCount bool             `json:"restoreToOriginalReplicaCount,omitempty"`
	ScalingModifiers              scalingModifiers `json:"scalingModifiers,omitempty"`
}

type scalingModifiers struct {
	Formula          string                         `json:"formula,omitempty"`
	Target           string                         `json:"target,omitempty"`
	ActivationTarget string                         `json:"activationTarget,omitempty"`
	MetricType       autoscalingv2.MetricTargetType `json:"metricType,omitempty"`
}

type hpaConfig struct {
	Behavior *autoscalingv2.HorizontalPodAutoscalerBehavior `json:"behavior,omitempty"`
	Name     string                                         `json:"name,omitempty"`
}

type scaleTarget struct {
	Name                   string `json:"name"`
	APIVersion             string `json:"apiVersion,omitempty"`
	Kind                   string `json:"kind,omitempty"`
	EnvSourceContainerName string `json:"envSourceContainerName,omitempty"`
}

type scaleTrigger struct {
	Type              string                         `json:"type"`
	Name              string                         `json:"name,omitempty"`
	UseCachedMetrics  bool                           `json:"useCachedMetrics,omitempty"`
	Metadata          map[string]string              `json:"metadata"`
	AuthenticationRef *authenticationRef             `json:"authenticationRef,omitempty"`
	MetricType        autoscalingv2.MetricTargetType `json:"metricType,omitempty"`
}

type authenticationRef struct {
	Name string `json:"name"`
	Kind string `json:"kind,omitempty"`
}

// triggerKeys are the metadata keys of the scalers used (KEDA's
// pkg/scalers/nats_jetstream_scaler.go and prometheus_scaler.go).
var triggerKeys = map[string][]string{
	"nats-jetstream": {"account", "accountID", "stream", "consumer", "lagThreshold", "activationLagThreshold",
		"useHttps", "natsServerMonitoringEndpoint"},
	"prometheus": {"serverAddress", "query", "queryParameters", "threshold", "activationThreshold", "namespace",
		"customHeaders", "ignoreNullValues", "unsafeSsl", "timeout"},
}

// ---------------------------------------------------------------------------
// Building and decoding.

// bundle is the output of one kustomization, decoded.
type bundle struct {
	dir             string
	namespaces      []*corev1.Namespace
	serviceAccounts []*corev1.ServiceAccount
	configMaps      []*corev1.ConfigMap
	secrets         []*corev1.Secret
	services        []*corev1.Service
	deployments     []*appsv1.Deployment
	jobs            []*batchv1.Job
	pdbs            []*policyv1.PodDisruptionBudget
	serviceMonitors []*monitoringv1.ServiceMonitor
	scaledObjects   []*scaledObject
}

// build runs kustomize on dir (relative to deploy/k8s) and returns each
// object's YAML.
func build(dir string) ([][]byte, error) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	var out [][]byte
	for _, r := range m.Resources() {
		b, err := r.AsYAML()
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", dir, r.CurId(), err)
		}
		out = append(out, b)
	}
	return out, nil
}

// strict decodes YAML into v, refusing unknown and duplicate fields.
func strict(doc []byte, v any) error {
	return yaml.UnmarshalStrict(doc, v)
}

// decode decodes every object of docs strictly into its API type.
func decode(dir string, docs [][]byte) (*bundle, error) {
	b := &bundle{dir: dir}
	var errs []error
	for _, doc := range docs {
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			errs = append(errs, err)
			continue
		}
		var err error
		switch tm.APIVersion + " " + tm.Kind {
		case "v1 Namespace":
			err = into(doc, &b.namespaces)
		case "v1 ServiceAccount":
			err = into(doc, &b.serviceAccounts)
		case "v1 ConfigMap":
			err = into(doc, &b.configMaps)
		case "v1 Secret":
			err = into(doc, &b.secrets)
		case "v1 Service":
			err = into(doc, &b.services)
		case "apps/v1 Deployment":
			err = into(doc, &b.deployments)
		case "batch/v1 Job":
			err = into(doc, &b.jobs)
		case "policy/v1 PodDisruptionBudget":
			err = into(doc, &b.pdbs)
		case "monitoring.coreos.com/v1 ServiceMonitor":
			err = into(doc, &b.serviceMonitors)
		case "keda.sh/v1alpha1 ScaledObject":
			err = into(doc, &b.scaledObjects)
		default:
			err = fmt.Errorf("no API type known for %s %s", tm.APIVersion, tm.Kind)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %s %s: %w", dir, tm.Kind, objectName(doc), err))
		}
	}
	return b, errors.Join(errs...)
}

func into[T any](doc []byte, list *[]*T) error {
	v := new(T)
	if err := strict(doc, v); err != nil {
		return err
	}
	*list = append(*list, v)
	return nil
}

func objectName(doc []byte) string {
	if m := regexp.MustCompile(`(?m)^  name: (\S+)$`).FindSubmatch(doc); m != nil {
		return string(m[1])
	}
	return "?"
}

// built caches each kustomization's YAML; tests decode a fresh bundle from
// it, so that TestChecksCanFail may mutate its copy.
var built = map[string][][]byte{}

func load(t *testing.T, dir string) *bundle {
	t.Helper()
	docs, ok := built[dir]
	if !ok {
		var err error
		docs, err = build(dir)
		require.NoError(t, err)
		built[dir] = docs
	}
	b, err := decode(dir, docs)
	require.NoError(t, err)
	return b
}

// ---------------------------------------------------------------------------
// Facts from the code.

// routes returns the paths served with GET by the Go files given (relative
// to the module root): the "GET /path" patterns of http.ServeMux.
func routes(t *testing.T, files ...string) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	fset := token.NewFileSet()
	for _, f := range files {
		file, err := parser.ParseFile(fset, filepath.Join("..", "..", f), nil, 0)
		require.NoError(t, err)
		ast.Inspect(file, func(n ast.Node) bool {
			if lit, ok := n.(*ast.BasicLit); ok && lit.Kind == token.STRING {
				s, err := strconv.Unquote(lit.Value)
				if err == nil && strings.HasPrefix(s, "GET /") {
					out[strings.TrimPrefix(s, "GET ")] = true
				}
			}
			return true
		})
	}
	require.NotEmpty(t, out, "no GET routes found in %v", files)
	return out
}

var (
	workerRoutesFiles = []string{"cmd/worker/worker.go"}
	relayRoutesFiles  = []string{"cmd/publisher/outbox.go"}
)

// metricsInfo is what telemetry registers: each metric's label names, and
// the label values of the series that exist from the start.
type metricsInfo struct {
	labels map[string][]string            // metric name → variable label names
	values map[string]map[string][]string // metric name → label → values seen
}

// describingRegisterer records what is registered on it.
type describingRegisterer struct{ collectors []prometheus.Collector }

func (d *describingRegisterer) Register(c prometheus.Collector) error {
	d.collectors = append(d.collectors, c)
	return nil
}
func (d *describingRegisterer) MustRegister(cs ...prometheus.Collector) {
	d.collectors = append(d.collectors, cs...)
}
func (d *describingRegisterer) Unregister(prometheus.Collector) bool { return false }

func telemetryMetrics(t *testing.T) metricsInfo {
	t.Helper()
	info := metricsInfo{labels: map[string][]string{}, values: map[string]map[string][]string{}}
	// Names and label names from Describe.
	d := &describingRegisterer{}
	telemetry.New(d)
	descRE := regexp.MustCompile(`fqName: "([^"]+)".*variableLabels: \{([^}]*)\}`)
	for _, c := range d.collectors {
		ch := make(chan *prometheus.Desc, 16)
		go func() { c.Describe(ch); close(ch) }()
		for desc := range ch {
			m := descRE.FindStringSubmatch(desc.String())
			require.NotNil(t, m, "cannot read %s", desc)
			info.labels[m[1]] = strings.FieldsFunc(m[2], func(r rune) bool { return r == ',' || r == ' ' })
		}
	}
	require.NotEmpty(t, info.labels)
	// Label values of the series telemetry.New creates up front, from a
	// real registry.
	reg := prometheus.NewRegistry()
	telemetry.New(reg)
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				vals := info.values[mf.GetName()]
				if vals == nil {
					vals = map[string][]string{}
					info.values[mf.GetName()] = vals
				}
				vals[lp.GetName()] = append(vals[lp.GetName()], lp.GetValue())
			}
		}
	}
	return info
}

// ---------------------------------------------------------------------------
// Lookups in a bundle.

func (b *bundle) deployment(name string) *appsv1.Deployment {
	for _, d := range b.deployments {
		if d.Name == name {
			return d
		}
	}
	return nil
}

func (b *bundle) job(name string) *batchv1.Job {
	for _, j := range b.jobs {
		if j.Name == name {
			return j
		}
	}
	return nil
}

func (b *bundle) configMap(name string) *corev1.ConfigMap {
	for _, c := range b.configMaps {
		if c.Name == name {
			return c
		}
	}
	return nil
}

func (b *bundle) secret(name string) *corev1.Secret {
	for _, s := range b.secrets {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// hasSecrets says whether the bundle supplies its Secrets (an overlay) or
// leaves them to the cluster (a base).
func (b *bundle) hasSecrets() bool { return len(b.secrets) > 0 }

// ---------------------------------------------------------------------------
// Checks. Each returns the problems it finds; TestManifests requires none,
// TestChecksCanFail requires the one it provoked.

// checkPodSecurity: every pod runs as non-root with a read-only root file
// system, no capabilities, no privilege escalation and the runtime's seccomp
// profile; no service account token; images are paystream's, tagged in an
// overlay.
func checkPodSecurity(b *bundle, overlay bool) []error {
	var errs []error
	pods := map[string]corev1.PodSpec{}
	for _, d := range b.deployments {
		pods["Deployment "+d.Name] = d.Spec.Template.Spec
	}
	for _, j := range b.jobs {
		pods["Job "+j.Name] = j.Spec.Template.Spec
	}
	for what, p := range pods {
		fail := func(format string, args ...any) {
			errs = append(errs, fmt.Errorf("%s: %s: %s", b.dir, what, fmt.Sprintf(format, args...)))
		}
		psc := p.SecurityContext
		if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
			fail("pod securityContext must set runAsNonRoot and a non-zero runAsUser")
		}
		if psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			fail("pod seccompProfile must be RuntimeDefault")
		}
		if p.AutomountServiceAccountToken == nil || *p.AutomountServiceAccountToken {
			fail("automountServiceAccountToken must be false")
		}
		for _, c := range p.Containers {
			sc := c.SecurityContext
			switch {
			case sc == nil:
				fail("container %s: no securityContext", c.Name)
				continue
			case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
				fail("container %s: readOnlyRootFilesystem must be true", c.Name)
			case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
				fail("container %s: allowPrivilegeEscalation must be false", c.Name)
			case sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0:
				fail("container %s: capabilities must drop ALL and add none", c.Name)
			}
			name, tag, _ := strings.Cut(path.Base(c.Image), ":")
			if name != "paystream" {
				fail("container %s: image %q is not paystream's", c.Name, c.Image)
			}
			if overlay && (tag == "" || tag == "latest") {
				fail("container %s: image %q needs a version tag", c.Name, c.Image)
			}
			if c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
				fail("container %s: memory request and limit are required", c.Name)
			}
		}
	}
	return errs
}

// checkRefs: every ConfigMap, Secret, ServiceAccount and volume a pod
// refers to exists (Secrets only where the bundle supplies them), and every
// key it reads is there.
func checkRefs(b *bundle) []error {
	var errs []error
	check := func(what string, p corev1.PodSpec) {
		fail := func(format string, args ...any) {
			errs = append(errs, fmt.Errorf("%s: %s: %s", b.dir, what, fmt.Sprintf(format, args...)))
		}
		if p.ServiceAccountName != "" && !slices.ContainsFunc(b.serviceAccounts, func(s *corev1.ServiceAccount) bool {
			return s.Name == p.ServiceAccountName
		}) {
			fail("no ServiceAccount %s", p.ServiceAccountName)
		}
		secretKey := func(name, key string) {
			if !b.hasSecrets() {
				return
			}
			s := b.secret(name)
			if s == nil {
				fail("no Secret %s", name)
				return
			}
			if _, ok := s.Data[key]; !ok {
				if _, ok := s.StringData[key]; !ok {
					fail("Secret %s has no key %s", name, key)
				}
			}
		}
		vols := map[string]corev1.Volume{}
		for _, v := range p.Volumes {
			vols[v.Name] = v
			if v.Secret != nil {
				for _, it := range v.Secret.Items {
					secretKey(v.Secret.SecretName, it.Key)
				}
				if len(v.Secret.Items) == 0 && b.hasSecrets() && b.secret(v.Secret.SecretName) == nil {
					fail("no Secret %s", v.Secret.SecretName)
				}
			}
		}
		for _, c := range p.Containers {
			for _, ef := range c.EnvFrom {
				if ef.ConfigMapRef != nil && b.configMap(ef.ConfigMapRef.Name) == nil {
					fail("container %s: no ConfigMap %s", c.Name, ef.ConfigMapRef.Name)
				}
			}
			for _, e := range c.Env {
				if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
					secretKey(e.ValueFrom.SecretKeyRef.Name, e.ValueFrom.SecretKeyRef.Key)
				}
			}
			for _, m := range c.VolumeMounts {
				if _, ok := vols[m.Name]; !ok {
					fail("container %s: mount of unknown volume %s", c.Name, m.Name)
				}
			}
		}
	}
	for _, d := range b.deployments {
		check("Deployment "+d.Name, d.Spec.Template.Spec)
	}
	for _, j := range b.jobs {
		check("Job "+j.Name, j.Spec.Template.Spec)
	}
	return errs
}

// containerEnv resolves a container's environment as the kubelet would:
// envFrom ConfigMaps, then env values, field references (a pod name) and
// Secret keys (the overlay's value, or a stand-in in a base). Settings that
// name a file must point into a mounted Secret volume; they are replaced by a
// temporary file holding the Secret's key (or a stand-in), so that the
// config package's readable-file rules pass. It returns the environment and
// every PAYSTREAM_* name set.
func containerEnv(b *bundle, p corev1.PodSpec, c corev1.Container, tmp string) (map[string]string, []string, []error) {
	env := map[string]string{}
	var names []string
	var errs []error
	fail := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: container %s: %s", b.dir, c.Name, fmt.Sprintf(format, args...)))
	}
	set := func(k, v string) {
		env[k] = v
		if strings.HasPrefix(k, config.EnvPrefix+"_") {
			names = append(names, k)
		}
	}
	secretValue := func(name, key, standIn string) string {
		if s := b.secret(name); s != nil {
			if v, ok := s.Data[key]; ok {
				return string(v)
			}
		}
		return standIn
	}
	for _, ef := range c.EnvFrom {
		if ef.ConfigMapRef == nil {
			fail("envFrom other than a ConfigMap")
			continue
		}
		if cm := b.configMap(ef.ConfigMapRef.Name); cm != nil {
			for k, v := range cm.Data {
				set(ef.Prefix+k, v)
			}
		}
	}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			set(e.Name, e.Value)
		case e.ValueFrom.FieldRef != nil:
			set(e.Name, "paystream-worker-5d8f7c9b6-x2x4q")
		case e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			set(e.Name, secretValue(ref.Name, ref.Key, "postgres://paystream@postgres:5432/paystream"))
		default:
			fail("env %s: unsupported valueFrom", e.Name)
		}
	}
	// Files from mounted Secrets.
	vols := map[string]corev1.Volume{}
	for _, v := range p.Volumes {
		vols[v.Name] = v
	}
	for i, name := range fileVars {
		file, ok := env[name]
		if !ok || file == "" {
			continue
		}
		var found bool
		for _, m := range c.VolumeMounts {
			rel, err := filepath.Rel(m.MountPath, file)
			if err != nil || strings.HasPrefix(rel, "..") || rel == "." {
				continue
			}
			v, ok := vols[m.Name]
			if !ok || v.Secret == nil {
				continue
			}
			key := ""
			if len(v.Secret.Items) == 0 {
				key = rel
			}
			for _, it := range v.Secret.Items {
				if it.Path == rel {
					key = it.Key
				}
			}
			if key == "" {
				continue
			}
			found = true
			local := filepath.Join(tmp, fmt.Sprintf("%s-%d", c.Name, i))
			if err := os.WriteFile(local, []byte(secretValue(v.Secret.SecretName, key, "x")), 0o600); err != nil {
				fail("%v", err)
			}
			env[name] = local
		}
		if !found {
			fail("%s=%s is not a file of a mounted Secret volume", name, file)
		}
	}
	slices.Sort(names)
	return env, names, errs
}

// checkNames: every PAYSTREAM_* variable is a setting (config.Vars), or one
// of the settings the program reads when only is given.
func checkNames(b *bundle, what string, names []string, only []string) []error {
	known := map[string]bool{}
	for _, v := range config.Vars() {
		known[v] = only == nil
	}
	for _, n := range only {
		known[config.EnvPrefix+"_"+n] = true
	}
	var errs []error
	for _, n := range names {
		if !known[n] && !(pendingVars[n] && !slices.Contains(config.Vars(), n)) {
			errs = append(errs, fmt.Errorf("%s: %s: %s is not a setting it reads", b.dir, what, n))
		}
	}
	return errs
}

func lookup(env map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := env[k]; return v, ok }
}

// probe checks that p is an HTTP GET probe of one of paths on a port that
// the container declares, and returns that port's number.
func probe(c corev1.Container, p *corev1.Probe, kind string, paths map[string]bool, want string) (int32, error) {
	if p == nil || p.HTTPGet == nil {
		return 0, fmt.Errorf("container %s: no HTTP %s probe", c.Name, kind)
	}
	if !paths[p.HTTPGet.Path] {
		return 0, fmt.Errorf("container %s: %s probe path %s is not served (routes: %v)", c.Name, kind, p.HTTPGet.Path, slices.Sorted(maps.Keys(paths)))
	}
	if want != "" && p.HTTPGet.Path != want {
		return 0, fmt.Errorf("container %s: %s probe path %s, want %s", c.Name, kind, p.HTTPGet.Path, want)
	}
	port, ok := containerPort(c, p.HTTPGet.Port)
	if !ok {
		return 0, fmt.Errorf("container %s: %s probe port %s is not a container port", c.Name, kind, p.HTTPGet.Port.String())
	}
	return port, nil
}

func containerPort(c corev1.Container, p intstr.IntOrString) (int32, bool) {
	for _, cp := range c.Ports {
		if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
			return cp.ContainerPort, true
		}
	}
	return 0, false
}

// addrPort is the port of a listen address such as ":8080".
func addrPort(addr string) (int32, error) {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(p, 10, 32)
	return int32(n), err
}

// checkWorker: the worker Deployment's settings parse, its probes and ports
// agree with PAYSTREAM_HTTP_ADDR and the worker's routes, its grace period
// covers the drain, and its memory request covers the measured RSS.
func checkWorker(t *testing.T, b *bundle, workerRoutes map[string]bool) ([]error, config.Config) {
	d := b.deployment(workerName)
	if d == nil {
		return []error{fmt.Errorf("%s: no Deployment %s", b.dir, workerName)}, config.Config{}
	}
	var errs []error
	fail := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: Deployment %s: %s", b.dir, workerName, fmt.Sprintf(format, args...)))
	}
	p := d.Spec.Template.Spec
	if len(p.Containers) != 1 {
		fail("want one container, got %d", len(p.Containers))
		return errs, config.Config{}
	}
	c := p.Containers[0]
	if len(c.Command) > 0 || len(c.Args) > 0 {
		fail("the worker runs the image's entrypoint without arguments, got %q %q", c.Command, c.Args)
	}
	env, names, envErrs := containerEnv(b, p, c, t.TempDir())
	errs = append(errs, envErrs...)
	errs = append(errs, checkNames(b, "worker", names, nil)...)
	cfg, err := config.Parse(flag.NewFlagSet("worker", flag.ContinueOnError), nil, lookup(env))
	if err != nil {
		fail("settings do not parse: %v", err)
		return errs, cfg
	}
	if cfg.Migrate {
		fail("PAYSTREAM_MIGRATE must be false: the Job %s migrates", migrateName)
	}
	if !cfg.Provision {
		fail("PAYSTREAM_PROVISION must be true: the workers create the consumer that KEDA reads (keda #7657)")
	}
	if _, ok := env["PAYSTREAM_WORKER_ID"]; !ok {
		fail("PAYSTREAM_WORKER_ID should be the pod name")
	}

	// Ports and probes.
	httpPort, err := addrPort(cfg.HTTPAddr)
	if err != nil {
		fail("PAYSTREAM_HTTP_ADDR %q: %v", cfg.HTTPAddr, err)
	}
	for _, pr := range []struct {
		kind  string
		probe *corev1.Probe
		path  string
	}{
		{"liveness", c.LivenessProbe, "/healthz"},
		{"readiness", c.ReadinessProbe, "/readyz"},
		{"startup", c.StartupProbe, "/healthz"},
	} {
		port, err := probe(c, pr.probe, pr.kind, workerRoutes, pr.path)
		if err != nil {
			fail("%v", err)
		} else if port != httpPort {
			fail("%s probe on port %d, but PAYSTREAM_HTTP_ADDR is %s", pr.kind, port, cfg.HTTPAddr)
		}
	}
	if _, ok := containerPort(c, intstr.FromInt32(httpPort)); !ok {
		fail("no container port %d (PAYSTREAM_HTTP_ADDR %s)", httpPort, cfg.HTTPAddr)
	}

	// Grace period versus the drain.
	var preStop time.Duration
	switch {
	case c.Lifecycle == nil || c.Lifecycle.PreStop == nil:
		fail("no preStop hook")
	case c.Lifecycle.PreStop.Exec != nil:
		// The image is distroless: only its own binaries can run.
		if cmd := c.Lifecycle.PreStop.Exec.Command; len(cmd) == 0 || !strings.HasPrefix(cmd[0], "/usr/local/bin/") {
			fail("preStop exec %q: the image has no shell, only /usr/local/bin/{worker,publisher,gatewaysim}", cmd)
		}
	case c.Lifecycle.PreStop.Sleep != nil:
		preStop = time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
	default:
		fail("preStop must be a sleep or an exec of the worker binary")
	}
	need := preStop + cfg.ShutdownTimeout + cfg.GatewayTimeout + httpShutdown + natsDrain
	if g := p.TerminationGracePeriodSeconds; g == nil || time.Duration(*g)*time.Second <= need {
		fail("terminationGracePeriodSeconds must exceed preStop %v + PAYSTREAM_SHUTDOWN_TIMEOUT %v + PAYSTREAM_GATEWAY_TIMEOUT %v + HTTP shutdown %v + NATS drain %v = %v",
			preStop, cfg.ShutdownTimeout, cfg.GatewayTimeout, httpShutdown, natsDrain, need)
	}

	// Resources.
	if req := c.Resources.Requests.Memory(); req.Cmp(measuredWorkerRSS) < 0 {
		fail("memory request %s is below the measured RSS %s", req, &measuredWorkerRSS)
	}
	if lim, req := c.Resources.Limits.Memory(), c.Resources.Requests.Memory(); lim.Cmp(*req) <= 0 {
		fail("memory limit %s must leave room above the request %s", lim, req)
	}
	if s := d.Spec.Strategy.RollingUpdate; s == nil || s.MaxUnavailable == nil || s.MaxUnavailable.IntValue() != 0 {
		fail("rolling updates must not take a worker away before its replacement is up (maxUnavailable: 0)")
	}
	if d.Spec.Replicas != nil {
		fail("spec.replicas is KEDA's: leave it out so that an apply does not reset it")
	}
	return errs, cfg
}

// checkMigrateJob: the migration Job runs `worker migrate` with settings that
// pass the worker's validation as migrate applies it.
func checkMigrateJob(t *testing.T, b *bundle) []error {
	j := b.job(migrateName)
	if j == nil {
		return []error{fmt.Errorf("%s: no Job %s", b.dir, migrateName)}
	}
	var errs []error
	p := j.Spec.Template.Spec
	c := p.Containers[0]
	if len(c.Command) > 0 || !slices.Equal(c.Args, []string{"migrate"}) {
		errs = append(errs, fmt.Errorf("%s: Job %s: must run the entrypoint with args [migrate], got %q %q", b.dir, migrateName, c.Command, c.Args))
	}
	env, names, envErrs := containerEnv(b, p, c, t.TempDir())
	errs = append(errs, envErrs...)
	errs = append(errs, checkNames(b, "migrate", names, nil)...)
	// migrateOnly in cmd/worker stands in for a missing gateway URL.
	if env["PAYSTREAM_GATEWAY_URL"] == "" {
		env["PAYSTREAM_GATEWAY_URL"] = "fake"
	}
	if _, err := config.Parse(flag.NewFlagSet("worker", flag.ContinueOnError), nil, lookup(env)); err != nil {
		errs = append(errs, fmt.Errorf("%s: Job %s: settings do not parse: %w", b.dir, migrateName, err))
	}
	if p.RestartPolicy != corev1.RestartPolicyOnFailure && p.RestartPolicy != corev1.RestartPolicyNever {
		errs = append(errs, fmt.Errorf("%s: Job %s: restartPolicy %s", b.dir, migrateName, p.RestartPolicy))
	}
	return errs
}

// selects says whether sel selects the pod labels of template.
func selects(sel *metav1.LabelSelector, podLabels map[string]string) bool {
	s, err := metav1.LabelSelectorAsSelector(sel)
	return err == nil && !s.Empty() && s.Matches(labels.Set(podLabels))
}

// checkMetrics: the Service selects the pods and targets the container's
// HTTP port; the ServiceMonitor selects the Service, scrapes a port it has
// and a path the program serves; the PodDisruptionBudget selects the pods.
func checkMetrics(b *bundle, deployment string, routes map[string]bool) []error {
	d := b.deployment(deployment)
	if d == nil {
		return []error{fmt.Errorf("%s: no Deployment %s", b.dir, deployment)}
	}
	var errs []error
	fail := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s: %s", b.dir, deployment, fmt.Sprintf(format, args...)))
	}
	podLabels := d.Spec.Template.Labels
	if !selects(d.Spec.Selector, podLabels) {
		fail("the Deployment's selector does not select its own pods")
	}
	c := d.Spec.Template.Spec.Containers[0]
	var svc *corev1.Service
	for _, s := range b.services {
		if len(s.Spec.Selector) > 0 && labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(podLabels)) {
			svc = s
		}
	}
	if svc == nil {
		fail("no Service selects the pods")
		return errs
	}
	for _, sp := range svc.Spec.Ports {
		if _, ok := containerPort(c, sp.TargetPort); !ok {
			fail("Service %s port %s targets %s, which the container does not declare", svc.Name, sp.Name, sp.TargetPort.String())
		}
	}
	var sm *monitoringv1.ServiceMonitor
	for _, m := range b.serviceMonitors {
		if selects(&m.Spec.Selector, svc.Labels) {
			sm = m
		}
	}
	if sm == nil {
		fail("no ServiceMonitor selects the Service %s", svc.Name)
		return errs
	}
	if len(sm.Spec.Endpoints) == 0 {
		fail("ServiceMonitor %s has no endpoints", sm.Name)
	}
	for _, ep := range sm.Spec.Endpoints {
		if !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == ep.Port }) {
			fail("ServiceMonitor %s scrapes port %q, which the Service %s does not have", sm.Name, ep.Port, svc.Name)
		}
		if ep.Path == "" || !routes[ep.Path] {
			fail("ServiceMonitor %s scrapes path %q, which is not served", sm.Name, ep.Path)
		}
	}
	if !slices.ContainsFunc(b.pdbs, func(p *policyv1.PodDisruptionBudget) bool { return selects(p.Spec.Selector, podLabels) }) {
		fail("no PodDisruptionBudget selects the pods")
	}
	return errs
}

// checkScaledObject: the ScaledObject scales the worker Deployment on the
// consumer and stream of package contract (which the workers' settings also
// name), its thresholds and bounds agree with each other and with the
// settings, and its prometheus query uses metrics and label values that
// package telemetry registers, scraped by the ServiceMonitor's job.
func checkScaledObject(b *bundle, cfg config.Config, metrics metricsInfo) []error {
	var errs []error
	fail := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: ScaledObject: %s", b.dir, fmt.Sprintf(format, args...)))
	}
	if len(b.scaledObjects) != 1 {
		fail("want one ScaledObject, got %d", len(b.scaledObjects))
		return errs
	}
	so := b.scaledObjects[0]
	s := so.Spec
	if s.ScaleTargetRef == nil || s.ScaleTargetRef.Name != workerName || (s.ScaleTargetRef.Kind != "" && s.ScaleTargetRef.Kind != "Deployment") {
		fail("scaleTargetRef must be the Deployment %s", workerName)
	}
	if s.MinReplicaCount == nil || *s.MinReplicaCount < 1 || s.MaxReplicaCount == nil || *s.MaxReplicaCount < *s.MinReplicaCount {
		fail("minReplicaCount must be at least 1 (a worker provisions the consumer) and at most maxReplicaCount")
		return errs
	}
	minR, maxR := *s.MinReplicaCount, *s.MaxReplicaCount
	if f := s.Fallback; f == nil || f.FailureThreshold < 1 || f.Replicas < minR || f.Replicas > maxR {
		fail("fallback replicas must lie between minReplicaCount and maxReplicaCount")
	}
	// The gateway's rate limit, declared on the object, caps the fleet.
	gwLimit, err := strconv.ParseFloat(so.Annotations["paystream.io/gateway-rate-limit"], 64)
	if err != nil || gwLimit <= 0 {
		fail("annotation paystream.io/gateway-rate-limit (gateway calls/s) is required: %v", err)
	} else if cfg.RateLimit <= 0 {
		fail("PAYSTREAM_RATE_LIMIT must be set: maxReplicaCount × it must stay within the gateway's limit")
	} else if float64(maxR)*cfg.RateLimit > gwLimit {
		fail("maxReplicaCount %d × PAYSTREAM_RATE_LIMIT %g = %g calls/s exceeds the gateway's %g", maxR, cfg.RateLimit, float64(maxR)*cfg.RateLimit, gwLimit)
	}
	a := s.Advanced
	if a == nil || a.HorizontalPodAutoscalerConfig == nil || a.HorizontalPodAutoscalerConfig.Behavior == nil ||
		a.HorizontalPodAutoscalerConfig.Behavior.ScaleDown == nil ||
		a.HorizontalPodAutoscalerConfig.Behavior.ScaleDown.StabilizationWindowSeconds == nil ||
		*a.HorizontalPodAutoscalerConfig.Behavior.ScaleDown.StabilizationWindowSeconds < 60 {
		fail("advanced.horizontalPodAutoscalerConfig.behavior.scaleDown.stabilizationWindowSeconds must be at least 60")
		return errs
	}
	mod := a.ScalingModifiers
	if mod.MetricType != autoscalingv2.AverageValueMetricType {
		fail("scalingModifiers.metricType must be AverageValue (KEDA refuses fallback otherwise)")
	}
	target, err := strconv.ParseInt(mod.Target, 10, 64)
	if err != nil || target <= 0 {
		fail("scalingModifiers.target %q: a positive integer", mod.Target)
	}

	byName := map[string]scaleTrigger{}
	for _, tr := range s.Triggers {
		allowed, ok := triggerKeys[tr.Type]
		if !ok {
			fail("trigger type %q is not one this test knows", tr.Type)
			continue
		}
		for k := range tr.Metadata {
			if !slices.Contains(allowed, k) {
				fail("trigger %s: unknown metadata key %q", tr.Name, k)
			}
		}
		if tr.Name == "" {
			fail("trigger of type %s needs a name for scalingModifiers.formula", tr.Type)
		}
		byName[tr.Name] = tr
	}
	// The formula uses exactly the triggers' names.
	idents := map[string]bool{}
	for _, id := range regexp.MustCompile(`[A-Za-z_][A-Za-z0-9_]*`).FindAllString(mod.Formula, -1) {
		if id != "min" && id != "max" {
			idents[id] = true
		}
	}
	// A number in the formula turns the gateway trigger's worker count into
	// backlog units: it must be the target.
	for _, n := range regexp.MustCompile(`\b\d+(\.\d+)?\b`).FindAllString(mod.Formula, -1) {
		if n != mod.Target {
			fail("scalingModifiers.formula %q: %s must be the target %s (a worker count times the target)", mod.Formula, n, mod.Target)
		}
	}
	if !sameKeys(idents, byName) {
		fail("scalingModifiers.formula %q must use each trigger name (%v) and nothing else", mod.Formula, slices.Sorted(maps.Keys(byName)))
	}

	// The backlog trigger.
	var nats, prom *scaleTrigger
	for _, tr := range s.Triggers {
		switch tr.Type {
		case "nats-jetstream":
			nats = &tr
		case "prometheus":
			prom = &tr
		}
	}
	if nats == nil || prom == nil {
		fail("want a nats-jetstream and a prometheus trigger")
		return errs
	}
	m := nats.Metadata
	if m["stream"] != contract.Stream || m["stream"] != cfg.Stream {
		fail("nats-jetstream stream %q: the workers consume %q (contract %q)", m["stream"], cfg.Stream, contract.Stream)
	}
	if m["consumer"] != contract.Consumer || m["consumer"] != cfg.Consumer {
		fail("nats-jetstream consumer %q: the workers share %q (contract %q)", m["consumer"], cfg.Consumer, contract.Consumer)
	}
	if m["account"] == "" && m["accountID"] == "" {
		fail("nats-jetstream needs account or accountID")
	}
	if _, _, err := net.SplitHostPort(m["natsServerMonitoringEndpoint"]); err != nil {
		fail("natsServerMonitoringEndpoint %q: host:port: %v", m["natsServerMonitoringEndpoint"], err)
	}
	lag, err := strconv.ParseInt(m["lagThreshold"], 10, 64)
	if err != nil || lag != target {
		fail("lagThreshold %q must equal scalingModifiers.target %q", m["lagThreshold"], mod.Target)
	}
	// The lag KEDA reads counts ack-pending messages, up to CONCURRENCY per
	// busy worker: a threshold below that asks for more workers than the
	// backlog needs.
	if lag < int64(cfg.Concurrency) {
		fail("lagThreshold %d is below PAYSTREAM_CONCURRENCY %d", lag, cfg.Concurrency)
	}
	if _, err := strconv.ParseInt(m["activationLagThreshold"], 10, 64); err != nil {
		fail("activationLagThreshold %q: %v", m["activationLagThreshold"], err)
	}

	// The gateway trigger's query. Its throttling signal is the gateway's
	// "too fast" (429), which the worker counts as the failure class retry.
	errs = append(errs, checkQuery(b, prom.Metadata["query"], metrics, maxR)...)
	if want := `result="` + payment.ClassRetry.String() + `"`; !strings.Contains(prom.Metadata["query"], want) {
		fail("the gateway trigger must count 429s, %s", want)
	}
	for _, k := range []string{"threshold", "activationThreshold"} {
		if _, err := strconv.ParseFloat(prom.Metadata[k], 64); err != nil {
			fail("prometheus %s %q: %v", k, prom.Metadata[k], err)
		}
	}
	if !strings.HasPrefix(prom.Metadata["serverAddress"], "http") {
		fail("prometheus serverAddress %q", prom.Metadata["serverAddress"])
	}
	return errs
}

// sameKeys says whether a and b have the same keys.
func sameKeys[V any](a map[string]bool, b map[string]V) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if _, ok := b[k]; !ok {
			return false
		}
	}
	return true
}

// checkQuery checks a PromQL query's metric names, label matchers and the
// job it reads.
func checkQuery(b *bundle, query string, metrics metricsInfo, maxReplicas int32) []error {
	var errs []error
	fail := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: prometheus query: %s", b.dir, fmt.Sprintf(format, args...)))
	}
	// Series selectors: name{matchers}.
	selRE := regexp.MustCompile(`([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}`)
	matcherRE := regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!=|!~|=)\s*"([^"]*)"`)
	sels := selRE.FindAllStringSubmatch(query, -1)
	if len(sels) == 0 {
		fail("no series selector in %q", query)
	}
	var services []string
	for _, s := range b.services {
		services = append(services, s.Name)
	}
	for _, sel := range sels {
		name := sel[1]
		base := name
		if _, ok := metrics.labels[name]; !ok {
			// A histogram's series: <name>_bucket, _sum, _count.
			for _, suf := range []string{"_bucket", "_sum", "_count"} {
				if _, ok := metrics.labels[strings.TrimSuffix(name, suf)]; ok && strings.HasSuffix(name, suf) {
					base = strings.TrimSuffix(name, suf)
				}
			}
		}
		lbls, ok := metrics.labels[base]
		if !ok {
			fail("metric %s is not registered by package telemetry", name)
			continue
		}
		var hasJob bool
		for _, mm := range matcherRE.FindAllStringSubmatch(sel[2], -1) {
			label, op, value := mm[1], mm[2], mm[3]
			switch {
			case label == "job":
				// prometheus-operator names the job after the Service.
				hasJob = true
				if op != "=" || !slices.Contains(services, value) {
					fail("%s: job=%q is not a Service of this deployment (%v)", name, value, services)
				}
			case label == "namespace" || label == "pod" || label == "instance" || label == "container":
			case !slices.Contains(lbls, label):
				fail("%s has no label %s (labels: %v)", name, label, lbls)
			case op == "=" && !slices.Contains(metrics.values[base][label], value):
				fail("%s{%s=%q}: no such value (known: %v)", name, label, value, metrics.values[base][label])
			}
		}
		if !hasJob {
			fail("%s: select the workers' series with job=\"<Service>\"", name)
		}
	}
	// The no-limit addend must reach maxReplicaCount.
	if m := regexp.MustCompile(`\+\s*(\d+)\s*\*`).FindStringSubmatch(query); m == nil {
		fail("no '+ N * (...)' addend for the unthrottled case")
	} else if n, _ := strconv.Atoi(m[1]); int32(n) < maxReplicas {
		fail("the unthrottled addend %d is below maxReplicaCount %d: it would cap the fleet", n, maxReplicas)
	}
	return errs
}

// checkRelay: the relay runs `publisher outbox relay` with only the settings
// that command reads, which parse; its probes hit /healthz on the port of
// PAYSTREAM_HTTP_ADDR; the migration Job runs `publisher outbox migrate`.
func checkRelay(t *testing.T, b *bundle, relayRoutes map[string]bool, settings []string) []error {
	d := b.deployment(relayName)
	if d == nil {
		return []error{fmt.Errorf("%s: no Deployment %s", b.dir, relayName)}
	}
	var errs []error
	fail := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", b.dir, fmt.Sprintf(format, args...)))
	}
	p := d.Spec.Template.Spec
	c := p.Containers[0]
	if !slices.Equal(c.Command, []string{"/usr/local/bin/publisher"}) || !slices.Equal(c.Args, []string{"outbox", "relay"}) {
		fail("relay must run /usr/local/bin/publisher outbox relay, got %q %q", c.Command, c.Args)
	}
	env, names, envErrs := containerEnv(b, p, c, t.TempDir())
	errs = append(errs, envErrs...)
	errs = append(errs, checkNames(b, "relay", names, settings)...)
	cfg, err := config.ParseSettings(flag.NewFlagSet("relay", flag.ContinueOnError), nil, lookup(env), settings...)
	if err != nil {
		fail("relay settings do not parse: %v", err)
		return errs
	}
	if cfg.Stream != contract.Stream {
		fail("relay publishes to %q, the workers consume %q", cfg.Stream, contract.Stream)
	}
	httpPort, err := addrPort(cfg.HTTPAddr)
	if err != nil {
		fail("relay PAYSTREAM_HTTP_ADDR %q: %v", cfg.HTTPAddr, err)
	}
	for _, pr := range []struct {
		kind  string
		probe *corev1.Probe
	}{{"readiness", c.ReadinessProbe}, {"liveness", c.LivenessProbe}} {
		port, err := probe(c, pr.probe, pr.kind, relayRoutes, "/healthz")
		if err != nil {
			fail("relay: %v", err)
		} else if port != httpPort {
			fail("relay %s probe on port %d, PAYSTREAM_HTTP_ADDR is %s", pr.kind, port, cfg.HTTPAddr)
		}
	}
	if d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
		fail("run at least two relays: one stands by")
	}
	j := b.job(relayMigr)
	if j == nil {
		fail("no Job %s", relayMigr)
		return errs
	}
	jc := j.Spec.Template.Spec.Containers[0]
	if !slices.Equal(jc.Command, []string{"/usr/local/bin/publisher"}) || !slices.Equal(jc.Args, []string{"outbox", "migrate"}) {
		fail("Job %s must run publisher outbox migrate, got %q %q", relayMigr, jc.Command, jc.Args)
	}
	jenv, jnames, envErrs := containerEnv(b, j.Spec.Template.Spec, jc, t.TempDir())
	errs = append(errs, envErrs...)
	errs = append(errs, checkNames(b, "outbox migrate", jnames, []string{"DATABASE_URL"})...)
	if _, err := config.ParseSettings(flag.NewFlagSet("migrate", flag.ContinueOnError), nil, lookup(jenv), "DATABASE_URL"); err != nil {
		fail("Job %s: settings do not parse: %v", relayMigr, err)
	}
	return errs
}

// ---------------------------------------------------------------------------
// Tests.

// workerChecks runs every check of a worker kustomization.
func workerChecks(t *testing.T, b *bundle, overlay bool, metrics metricsInfo, workerRoutes map[string]bool) []error {
	errs, cfg := checkWorker(t, b, workerRoutes)
	errs = append(errs, checkMigrateJob(t, b)...)
	errs = append(errs, checkPodSecurity(b, overlay)...)
	errs = append(errs, checkRefs(b)...)
	errs = append(errs, checkMetrics(b, workerName, workerRoutes)...)
	if cfg.Stream != "" {
		errs = append(errs, checkScaledObject(b, cfg, metrics)...)
	}
	return errs
}

func relayChecks(t *testing.T, b *bundle, overlay bool, relayRoutes map[string]bool) []error {
	errs := checkRelay(t, b, relayRoutes, relaySettings(t))
	errs = append(errs, checkPodSecurity(b, overlay)...)
	errs = append(errs, checkRefs(b)...)
	errs = append(errs, checkMetrics(b, relayName, relayRoutes)...)
	return errs
}

func TestManifests(t *testing.T) {
	metrics := telemetryMetrics(t)
	workerRoutes := routes(t, workerRoutesFiles...)
	relayRoutes := routes(t, relayRoutesFiles...)
	for _, r := range []string{"/healthz", "/readyz", "/metrics"} {
		require.True(t, workerRoutes[r], "the worker no longer serves %s: %v", r, workerRoutes)
	}
	for _, tc := range []struct {
		dir     string
		overlay bool
		relay   bool
	}{
		{baseDir, false, false},
		{exampleDir, true, false},
		{relayDir, false, true},
		{exampleUpstreamDir, true, true},
	} {
		t.Run(tc.dir, func(t *testing.T) {
			b := load(t, tc.dir)
			var errs []error
			if tc.relay {
				errs = relayChecks(t, b, tc.overlay, relayRoutes)
			} else {
				errs = workerChecks(t, b, tc.overlay, metrics, workerRoutes)
			}
			require.NoError(t, errors.Join(errs...))
			if tc.overlay {
				require.Len(t, b.namespaces, 1)
				for _, d := range b.deployments {
					require.Equal(t, b.namespaces[0].Name, d.Namespace)
				}
				require.NotEmpty(t, b.secrets, "an overlay supplies (placeholder) Secrets")
			}
		})
	}
}

// TestScalingFormula evaluates the ScaledObject's formula with expr, the
// expression language KEDA's scalingModifiers use, and follows the HPA's
// arithmetic for an AverageValue target (desired = ceil(value / target),
// within min and max): a backlog asks for workers in units of the target
// while the gateway is not throttling, and the fleet holds its size while it
// is.
func TestScalingFormula(t *testing.T) {
	b := load(t, exampleDir)
	require.Len(t, b.scaledObjects, 1)
	s := b.scaledObjects[0].Spec
	mod := s.Advanced.ScalingModifiers
	target, err := strconv.ParseFloat(mod.Target, 64)
	require.NoError(t, err)
	minR, maxR := float64(*s.MinReplicaCount), float64(*s.MaxReplicaCount)
	program, err := expr.Compile(mod.Formula, expr.Env(map[string]float64{"backlog": 0, "gateway": 0}), expr.AsFloat64())
	require.NoError(t, err, "formula %q", mod.Formula)
	// The addend of the gateway query when it is not throttling.
	m := regexp.MustCompile(`\+\s*(\d+)\s*\*`).FindStringSubmatch(s.Triggers[1].Metadata["query"])
	require.NotNil(t, m)
	unthrottled, err := strconv.ParseFloat(m[1], 64)
	require.NoError(t, err)

	desired := func(backlog, gateway float64) float64 {
		v, err := expr.Run(program, map[string]float64{"backlog": backlog, "gateway": gateway})
		require.NoError(t, err)
		return math.Min(maxR, math.Max(minR, math.Ceil(v.(float64)/target)))
	}
	for _, tc := range []struct {
		name     string
		pods     float64
		backlog  float64
		throttle bool
		want     float64
	}{
		{"idle", 2, 0, false, minR},
		{"in-flight work alone", 2, 2 * 64, false, minR},
		{"one target's worth per worker", 2, 3 * target, false, 3},
		{"burst, capped at max", 2, 20000, false, maxR},
		{"burst while the gateway throttles: hold", 4, 20000, true, 4},
		{"backlog below the fleet while throttled: shrink", 6, 2 * target, true, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gateway := tc.pods
			if !tc.throttle {
				gateway += unthrottled
			}
			require.Equal(t, tc.want, desired(tc.backlog, gateway))
		})
	}
}

// TestEveryKustomizationChecked: each directory under deploy/k8s holding a
// kustomization.yaml is one that TestManifests builds.
func TestEveryKustomizationChecked(t *testing.T) {
	var found []string
	err := filepath.WalkDir(".", func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Name() == "kustomization.yaml" {
			found = append(found, filepath.ToSlash(filepath.Dir(p)))
		}
		return err
	})
	require.NoError(t, err)
	require.ElementsMatch(t, []string{baseDir, relayDir, exampleDir, exampleUpstreamDir}, found)
}

// TestStrictDecoding: a misspelt field is refused, by the Kubernetes types
// and by the ScaledObject mirror alike.
func TestStrictDecoding(t *testing.T) {
	docs, err := build(baseDir)
	require.NoError(t, err)
	for _, tc := range []struct{ kind, from, to string }{
		{"Deployment", "terminationGracePeriodSeconds:", "terminationGracePeriod:"},
		{"ScaledObject", "stabilizationWindowSeconds:", "stabilisationWindowSeconds:"},
		{"ScaledObject", "failureThreshold:", "failureTreshold:"},
		{"ServiceMonitor", "scrapeTimeout:", "scrape_timeout:"},
		{"PodDisruptionBudget", "maxUnavailable:", "maxUnavailble:"},
	} {
		t.Run(tc.kind+"/"+tc.to, func(t *testing.T) {
			var broken [][]byte
			var hit bool
			for _, d := range docs {
				if bytes.Contains(d, []byte("kind: "+tc.kind+"\n")) && bytes.Contains(d, []byte(tc.from)) {
					d = bytes.Replace(d, []byte(tc.from), []byte(tc.to), 1)
					hit = true
				}
				broken = append(broken, d)
			}
			require.True(t, hit, "%s not found in a %s", tc.from, tc.kind)
			_, err := decode(baseDir, broken)
			require.ErrorContains(t, err, "unknown field")
		})
	}
}

// TestChecksCanFail breaks one cross-reference at a time in the example
// overlay and expects the checks to report it.
func TestChecksCanFail(t *testing.T) {
	metrics := telemetryMetrics(t)
	workerRoutes := routes(t, workerRoutesFiles...)
	relayRoutes := routes(t, relayRoutesFiles...)
	worker := func(b *bundle) *corev1.Container { return &b.deployment(workerName).Spec.Template.Spec.Containers[0] }
	workerCM := func(b *bundle) *corev1.ConfigMap {
		return b.configMap(worker(b).EnvFrom[0].ConfigMapRef.Name)
	}
	so := func(b *bundle) *scaledObjectSpec { return &b.scaledObjects[0].Spec }
	trigger := func(b *bundle, typ string) map[string]string {
		for _, tr := range so(b).Triggers {
			if tr.Type == typ {
				return tr.Metadata
			}
		}
		panic(typ)
	}
	relay := func(b *bundle) *corev1.Container { return &b.deployment(relayName).Spec.Template.Spec.Containers[0] }
	relayCM := func(b *bundle) *corev1.ConfigMap { return b.configMap(relay(b).EnvFrom[0].ConfigMapRef.Name) }

	cases := []struct {
		name   string
		relay  bool
		mutate func(b *bundle)
		want   string
	}{
		{"liveness path not served", false, func(b *bundle) { worker(b).LivenessProbe.HTTPGet.Path = "/health" }, "liveness probe path /health is not served"},
		{"readiness on /healthz", false, func(b *bundle) { worker(b).ReadinessProbe.HTTPGet.Path = "/healthz" }, "readiness probe path /healthz, want /readyz"},
		{"probe port unknown", false, func(b *bundle) { worker(b).ReadinessProbe.HTTPGet.Port = intstr.FromString("metrics") }, "readiness probe port metrics is not a container port"},
		{"HTTP_ADDR elsewhere", false, func(b *bundle) { workerCM(b).Data["PAYSTREAM_HTTP_ADDR"] = ":9090" }, "PAYSTREAM_HTTP_ADDR is :9090"},
		{"grace too short", false, func(b *bundle) {
			g := int64(60)
			b.deployment(workerName).Spec.Template.Spec.TerminationGracePeriodSeconds = &g
		}, "terminationGracePeriodSeconds must exceed"},
		{"shutdown timeout raised", false, func(b *bundle) { workerCM(b).Data["PAYSTREAM_SHUTDOWN_TIMEOUT"] = "45s" }, "terminationGracePeriodSeconds must exceed"},
		{"invalid setting", false, func(b *bundle) { workerCM(b).Data["PAYSTREAM_GATEWAY_TIMEOUT"] = "ten seconds" }, "PAYSTREAM_GATEWAY_TIMEOUT"},
		{"unknown setting", false, func(b *bundle) { workerCM(b).Data["PAYSTREAM_CONCURENCY"] = "64" }, "PAYSTREAM_CONCURENCY is not a setting"},
		{"creds outside a Secret", false, func(b *bundle) { workerCM(b).Data["PAYSTREAM_NATS_CREDS"] = "/etc/nats.creds" }, "is not a file of a mounted Secret volume"},
		{"missing Secret key", false, func(b *bundle) {
			worker(b).Env[1].ValueFrom.SecretKeyRef.Key = "url"
		}, "has no key url"},
		{"stream renamed", false, func(b *bundle) { trigger(b, "nats-jetstream")["stream"] = "PAYMENT" }, `nats-jetstream stream "PAYMENT"`},
		{"consumer renamed", false, func(b *bundle) { trigger(b, "nats-jetstream")["consumer"] = "workers" }, `nats-jetstream consumer "workers"`},
		{"consumer setting renamed", false, func(b *bundle) { workerCM(b).Data["PAYSTREAM_CONSUMER"] = "workers" }, `the workers share "workers"`},
		{"metric renamed", false, func(b *bundle) {
			m := trigger(b, "prometheus")
			m["query"] = strings.Replace(m["query"], "paystream_gateway_calls_total", "paystream_gateway_requests_total", 1)
		}, "metric paystream_gateway_requests_total is not registered"},
		{"label value unknown", false, func(b *bundle) {
			m := trigger(b, "prometheus")
			m["query"] = strings.Replace(m["query"], `result="retry"`, `result="throttled"`, 1)
		}, `result="throttled"`},
		{"job not a Service", false, func(b *bundle) {
			m := trigger(b, "prometheus")
			m["query"] = strings.ReplaceAll(m["query"], `job="paystream-worker-metrics"`, `job="paystream"`)
		}, `job="paystream" is not a Service`},
		{"lag threshold apart from target", false, func(b *bundle) { trigger(b, "nats-jetstream")["lagThreshold"] = "500" }, "must equal scalingModifiers.target"},
		{"lag threshold below concurrency", false, func(b *bundle) {
			trigger(b, "nats-jetstream")["lagThreshold"] = "32"
			so(b).Advanced.ScalingModifiers.Target = "32"
		}, "below PAYSTREAM_CONCURRENCY"},
		{"unknown trigger key", false, func(b *bundle) { trigger(b, "nats-jetstream")["streamName"] = "PAYMENTS" }, `unknown metadata key "streamName"`},
		{"formula names", false, func(b *bundle) { so(b).Advanced.ScalingModifiers.Formula = "min(lag, gateway * 1750)" }, "must use each trigger name"},
		{"formula factor", false, func(b *bundle) { so(b).Advanced.ScalingModifiers.Formula = "min(backlog, gateway * 2000)" }, "must be the target"},
		{"fleet past the gateway", false, func(b *bundle) { n := int32(20); so(b).MaxReplicaCount = &n }, "exceeds the gateway's"},
		{"rate limit raised", false, func(b *bundle) { workerCM(b).Data["PAYSTREAM_RATE_LIMIT"] = "300" }, "exceeds the gateway's"},
		{"fallback above max", false, func(b *bundle) { so(b).Fallback.Replicas = 50 }, "fallback replicas"},
		{"no scale-down window", false, func(b *bundle) {
			so(b).Advanced.HorizontalPodAutoscalerConfig.Behavior.ScaleDown.StabilizationWindowSeconds = nil
		}, "stabilizationWindowSeconds"},
		{"Value metric type", false, func(b *bundle) { so(b).Advanced.ScalingModifiers.MetricType = autoscalingv2.ValueMetricType }, "must be AverageValue"},
		{"wrong scale target", false, func(b *bundle) { so(b).ScaleTargetRef.Name = "worker" }, "scaleTargetRef"},
		{"service port mismatch", false, func(b *bundle) { b.services[0].Spec.Ports[0].TargetPort = intstr.FromInt32(9090) }, "which the container does not declare"},
		{"servicemonitor port mismatch", false, func(b *bundle) { b.serviceMonitors[0].Spec.Endpoints[0].Port = "metrics" }, `scrapes port "metrics"`},
		{"servicemonitor path", false, func(b *bundle) { b.serviceMonitors[0].Spec.Endpoints[0].Path = "/prometheus" }, `scrapes path "/prometheus"`},
		{"pdb selects nothing", false, func(b *bundle) { b.pdbs[0].Spec.Selector.MatchLabels = map[string]string{"app": "other"} }, "no PodDisruptionBudget"},
		{"writable root", false, func(b *bundle) { f := false; worker(b).SecurityContext.ReadOnlyRootFilesystem = &f }, "readOnlyRootFilesystem"},
		{"capabilities kept", false, func(b *bundle) { worker(b).SecurityContext.Capabilities.Drop = nil }, "drop ALL"},
		{"no seccomp", false, func(b *bundle) { b.deployment(workerName).Spec.Template.Spec.SecurityContext.SeccompProfile = nil }, "seccompProfile"},
		{"latest image", false, func(b *bundle) { worker(b).Image = "registry.example.com/paystream:latest" }, "needs a version tag"},
		{"request below RSS", false, func(b *bundle) { worker(b).Resources.Requests[corev1.ResourceMemory] = resource.MustParse("16Mi") }, "below the measured RSS"},
		{"preStop shell", false, func(b *bundle) {
			worker(b).Lifecycle.PreStop = &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"sh", "-c", "sleep 5"}}}
		}, "the image has no shell"},
		{"migrate job migrates nothing", false, func(b *bundle) { b.job(migrateName).Spec.Template.Spec.Containers[0].Args = nil }, "args [migrate]"},
		{"workers migrate too", false, func(b *bundle) { workerCM(b).Data["PAYSTREAM_MIGRATE"] = "true" }, "PAYSTREAM_MIGRATE must be false"},
		{"relay subcommand", true, func(b *bundle) { relay(b).Args = []string{"outbox"} }, "publisher outbox relay"},
		{"relay probe path", true, func(b *bundle) { relay(b).ReadinessProbe.HTTPGet.Path = "/readyz" }, "readiness probe path /readyz is not served"},
		{"relay worker setting", true, func(b *bundle) { relayCM(b).Data["PAYSTREAM_CONCURRENCY"] = "8" }, "PAYSTREAM_CONCURRENCY is not a setting it reads"},
		{"relay stream", true, func(b *bundle) { relayCM(b).Data["PAYSTREAM_STREAM"] = "ORDERS" }, `relay publishes to "ORDERS"`},
		{"relay port", true, func(b *bundle) { relayCM(b).Data["PAYSTREAM_HTTP_ADDR"] = ":8081" }, "PAYSTREAM_HTTP_ADDR is :8081"},
		{"relay missing Secret", true, func(b *bundle) { relay(b).Env[0].ValueFrom.SecretKeyRef.Name = "orders-db" }, "no Secret orders-db"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := exampleDir
			if tc.relay {
				dir = exampleUpstreamDir
			}
			b := load(t, dir)
			tc.mutate(b)
			var errs []error
			if tc.relay {
				errs = relayChecks(t, b, true, relayRoutes)
			} else {
				errs = workerChecks(t, b, true, metrics, workerRoutes)
			}
			require.ErrorContains(t, errors.Join(errs...), tc.want)
		})
	}
}

// argocd-lua runs Argo CD resource customizations (health checks and actions) with Argo CD's own
// Lua engine, github.com/argoproj/argo-cd/v3/util/lua, as the application controller and the API
// server run them. Built by hack/build-argocd-lua.sh.
//
//	argocd-lua health    (--script health.lua    | --argocd-cm argocd-cm.yaml) [OBJECT_FILE|-]...
//	argocd-lua discovery (--script discovery.lua | --argocd-cm argocd-cm.yaml) [OBJECT_FILE|-]...
//	argocd-lua action    (--script action.lua    | --argocd-cm argocd-cm.yaml --action NAME) [--param k=v]... [OBJECT_FILE|-]
//	argocd-lua test      [--argocd-cm argocd-cm.yaml] [--open-libs] DIR...
//
// Objects are YAML or JSON, one object, a List or several YAML documents, from files or stdin.
// health prints a JSON array of {kind, namespace, name, status, message}; discovery a JSON array of
// {kind, namespace, name, actions}; action the impacted resources as Argo CD decodes them, with
// the merge patch its API server would send for a patch
// ([{"resource": {...}, "operation": "patch", "mergePatch": {...}}]). test walks DIR for health_test.yaml and
// action_test.yaml files and checks them the way Argo CD's own util/lua tests do
// (TestLuaHealthScript, TestLuaResourceActionsScript), printing one line per case and a closing
// "N passed, N failed"; it exits 1 when a case fails.
//
// Scripts given in argocd-cm run with UseOpenLibs=false unless the ConfigMap says
// resource.customizations.useOpenLibs.<group_kind>: "true", as in Argo CD: only the base, table and
// package libraries are open, plus require("os") with time and date only (no global os); string,
// math, io are not. --script and test run with the same default; --open-libs opens the standard
// libraries (what Argo CD's tests do for its built-in health scripts).
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"github.com/argoproj/argo-cd/gitops-engine/v3/pkg/diff"
	"github.com/argoproj/argo-cd/gitops-engine/v3/pkg/health"
	applicationpkg "github.com/argoproj/argo-cd/v3/pkg/apiclient/application"
	appv1 "github.com/argoproj/argo-cd/v3/pkg/apis/application/v1alpha1"
	argolua "github.com/argoproj/argo-cd/v3/util/lua"
	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

const usage = `usage:
  argocd-lua health    (--script FILE | --argocd-cm FILE) [OBJECT_FILE|-]...
  argocd-lua discovery (--script FILE | --argocd-cm FILE) [OBJECT_FILE|-]...
  argocd-lua action    (--script FILE | --argocd-cm FILE --action NAME) [--param k=v]... [OBJECT_FILE|-]
  argocd-lua test      [--argocd-cm FILE] [--open-libs] DIR...`

type params []string

func (p *params) String() string     { return strings.Join(*p, ",") }
func (p *params) Set(v string) error { *p = append(*p, v); return nil }

func main() {
	if len(os.Args) < 2 {
		fail(usage)
	}
	cmd := os.Args[1]
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	script := fs.String("script", "", "a Lua script file (health.lua, discovery.lua or action.lua)")
	cm := fs.String("argocd-cm", "", "an argocd-cm ConfigMap whose resource.customizations.* keys hold the scripts")
	action := fs.String("action", "", "action: the action's name in the ConfigMap's definitions")
	openLibs := fs.Bool("open-libs", false, "open Lua's standard libraries (Argo CD does so only when useOpenLibs is set)")
	var ps params
	fs.Var(&ps, "param", "action: a parameter NAME=VALUE (repeatable)")
	if err := fs.Parse(os.Args[2:]); err != nil {
		fail(usage)
	}
	var err error
	switch cmd {
	case "health", "discovery", "action":
		err = runOne(cmd, *script, *cm, *action, *openLibs, ps, fs.Args())
	case "test":
		err = runTests(*cm, *openLibs, fs.Args())
	default:
		fail(fmt.Sprintf("argocd-lua: unknown command %q\n%s", cmd, usage))
	}
	if err != nil {
		fail("argocd-lua " + cmd + ": " + err.Error())
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, msg)
	os.Exit(2)
}

// source says where scripts come from: one file, or an argocd-cm's overrides looked up by GVK.
type source struct {
	script    string
	overrides map[string]appv1.ResourceOverride
	openLibs  bool
}

func newSource(script, cm string, openLibs bool) (*source, error) {
	switch {
	case script != "" && cm != "":
		return nil, errors.New("--script and --argocd-cm exclude each other: give one")
	case script != "":
		b, err := os.ReadFile(script)
		if err != nil {
			return nil, fmt.Errorf("--script: %w", err)
		}
		return &source{script: string(b), openLibs: openLibs}, nil
	case cm != "":
		ov, err := loadConfigMap(cm)
		if err != nil {
			return nil, fmt.Errorf("--argocd-cm %s: %w", cm, err)
		}
		return &source{overrides: ov, openLibs: openLibs}, nil
	}
	return nil, errors.New("give --script FILE or --argocd-cm FILE")
}

func (s *source) vm() argolua.VM {
	return argolua.VM{ResourceOverrides: s.overrides, UseOpenLibs: s.openLibs}
}

func (s *source) health(obj *unstructured.Unstructured) (*health.HealthStatus, error) {
	vm := s.vm()
	script := s.script
	if s.overrides != nil {
		var useOpenLibs bool
		var err error
		script, useOpenLibs, err = vm.GetHealthScript(obj)
		if err != nil {
			return nil, err
		}
		if script == "" {
			return nil, fmt.Errorf("no health script for %s in the ConfigMap (key resource.customizations.health.%s)", argolua.GetConfigMapKey(obj.GroupVersionKind()), cmKey(obj))
		}
		vm.UseOpenLibs = useOpenLibs || s.openLibs
	}
	return vm.ExecuteHealthLua(obj, script)
}

func (s *source) discovery(obj *unstructured.Unstructured) ([]appv1.ResourceAction, error) {
	vm := s.vm()
	scripts := []string{s.script}
	if s.overrides != nil {
		var err error
		if scripts, err = vm.GetResourceActionDiscovery(obj); err != nil {
			return nil, err
		}
		if len(scripts) == 0 {
			return nil, fmt.Errorf("no actions for %s in the ConfigMap (key resource.customizations.actions.%s)", argolua.GetConfigMapKey(obj.GroupVersionKind()), cmKey(obj))
		}
	}
	actions, err := vm.ExecuteResourceActionDiscovery(obj, scripts)
	sort.Slice(actions, func(i, j int) bool { return actions[i].Name < actions[j].Name })
	return actions, err
}

func (s *source) action(obj *unstructured.Unstructured, name string, ps []*applicationpkg.ResourceActionParameters) ([]argolua.ImpactedResource, error) {
	vm := s.vm()
	script := s.script
	if s.overrides != nil {
		if name == "" {
			return nil, errors.New("--action NAME is required with --argocd-cm")
		}
		def, err := vm.GetResourceAction(obj, name)
		if err != nil {
			return nil, fmt.Errorf("action %q: %w", name, err)
		}
		script = def.ActionLua
	}
	return vm.ExecuteResourceAction(obj, script, ps)
}

func cmKey(obj *unstructured.Unstructured) string {
	gvk := obj.GroupVersionKind()
	if gvk.Group == "" {
		return gvk.Kind
	}
	return gvk.Group + "_" + gvk.Kind
}

// loadConfigMap reads an argocd-cm ConfigMap's resource overrides as Argo CD's settings manager
// does (util/settings GetResourceOverrides: the legacy `resource.customizations` key, then the split
// keys resource.customizations.<type>.<group_kind> of appendResourceOverridesFromSplitKeys, with the
// same errors for a bad group_kind, a useOpenLibs that is not a bool and an unknown type).
func loadConfigMap(path string) (map[string]appv1.ResourceOverride, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var cm struct {
		Kind string            `json:"kind"`
		Data map[string]string `json:"data"`
	}
	if err := yaml.Unmarshal(b, &cm); err != nil {
		return nil, err
	}
	if cm.Kind != "ConfigMap" {
		return nil, fmt.Errorf("kind is %q, want ConfigMap", cm.Kind)
	}
	const prefix = "resource.customizations"
	out := map[string]appv1.ResourceOverride{}
	if v := cm.Data[prefix]; v != "" {
		if err := yaml.Unmarshal([]byte(v), &out); err != nil {
			return nil, fmt.Errorf("data[%q]: %w", prefix, err)
		}
	}
	for k, v := range cm.Data {
		if !strings.HasPrefix(k, prefix) {
			continue
		}
		parts := strings.SplitN(k, ".", 4)
		if len(parts) < 4 {
			continue
		}
		gk := strings.Split(parts[3], "_")
		key := parts[3]
		switch {
		case len(gk) == 2:
			key = gk[0] + "/" + gk[1]
		case len(gk) != 1 || parts[3] == "":
			return nil, fmt.Errorf("data key %q: group kind should be in format resource.customizations.<type>.<group_kind> or resource.customizations.<type>.<kind>", k)
		}
		if key == "all" {
			key = "*/*"
		}
		ov := out[key]
		switch parts[2] {
		case "health":
			ov.HealthLua = v
		case "actions":
			ov.Actions = v
		case "useOpenLibs":
			if ov.UseOpenLibs, err = strconv.ParseBool(v); err != nil {
				return nil, fmt.Errorf("data key %q: %w", k, err)
			}
		case "ignoreDifferences", "ignoreResourceUpdates", "knownTypeFields":
			// valid, but not about Lua
		default:
			return nil, fmt.Errorf("data key %q: resource customization type %s not supported", k, parts[2])
		}
		out[key] = ov
	}
	return out, nil
}

// readObjects reads every object of the files ("-" or none: stdin); a List is unpacked.
func readObjects(paths []string) ([]*unstructured.Unstructured, error) {
	if len(paths) == 0 {
		paths = []string{"-"}
	}
	var out []*unstructured.Unstructured
	for _, p := range paths {
		var r io.Reader = os.Stdin
		if p != "-" {
			f, err := os.Open(p)
			if err != nil {
				return nil, err
			}
			defer f.Close()
			r = f
		}
		dec := utilyaml.NewYAMLOrJSONDecoder(bufio.NewReader(r), 4096)
		for {
			m := map[string]any{}
			if err := dec.Decode(&m); err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				return nil, fmt.Errorf("%s: %w", p, err)
			}
			if len(m) == 0 {
				continue
			}
			u := &unstructured.Unstructured{Object: m}
			if u.IsList() {
				items, _, _ := unstructured.NestedSlice(m, "items")
				for i, it := range items {
					im, ok := it.(map[string]any)
					if !ok {
						return nil, fmt.Errorf("%s: items[%d] is not an object", p, i)
					}
					out = append(out, &unstructured.Unstructured{Object: im})
				}
				continue
			}
			out = append(out, u)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no object in the input")
	}
	return out, nil
}

func runOne(cmd, script, cm, action string, openLibs bool, ps params, files []string) error {
	src, err := newSource(script, cm, openLibs)
	if err != nil {
		return err
	}
	objs, err := readObjects(files)
	if err != nil {
		return err
	}
	var result any
	switch cmd {
	case "health":
		var rows []map[string]any
		for _, o := range objs {
			hs, err := src.health(o)
			if err != nil {
				return fmt.Errorf("%s %s/%s: %w", o.GetKind(), o.GetNamespace(), o.GetName(), err)
			}
			row := ref(o)
			if hs != nil {
				row["status"], row["message"] = string(hs.Status), hs.Message
			}
			rows = append(rows, row)
		}
		result = rows
	case "discovery":
		var rows []map[string]any
		for _, o := range objs {
			acts, err := src.discovery(o)
			if err != nil {
				return fmt.Errorf("%s %s/%s: %w", o.GetKind(), o.GetNamespace(), o.GetName(), err)
			}
			row := ref(o)
			row["actions"] = acts
			rows = append(rows, row)
		}
		result = rows
	case "action":
		if len(objs) != 1 {
			return fmt.Errorf("action takes one object, got %d", len(objs))
		}
		var aps []*applicationpkg.ResourceActionParameters
		for _, p := range ps {
			k, v, ok := strings.Cut(p, "=")
			if !ok {
				return fmt.Errorf("--param %q: want NAME=VALUE", p)
			}
			aps = append(aps, &applicationpkg.ResourceActionParameters{Name: &k, Value: &v})
		}
		impacted, err := src.action(objs[0], action, aps)
		if err != nil {
			return err
		}
		rows, err := withMergePatches(objs[0], impacted)
		if err != nil {
			return err
		}
		result = rows
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(result)
}

// actionResult is an impacted resource as argo-cd's util/lua decodes it, plus, for a patch, the JSON
// merge patch Argo CD's API server sends for it (server/application patchResource:
// jsonpatch.CreateMergePatch(live, new), applied with types.MergePatchType).
type actionResult struct {
	argolua.ImpactedResource
	MergePatch json.RawMessage `json:"mergePatch,omitempty"`
}

func withMergePatches(live *unstructured.Unstructured, impacted []argolua.ImpactedResource) ([]actionResult, error) {
	liveBytes, err := json.Marshal(live)
	if err != nil {
		return nil, err
	}
	out := make([]actionResult, 0, len(impacted))
	for _, ir := range impacted {
		row := actionResult{ImpactedResource: ir}
		if ir.K8SOperation == argolua.PatchOperation {
			newBytes, err := json.Marshal(ir.UnstructuredObj)
			if err != nil {
				return nil, err
			}
			if row.MergePatch, err = jsonpatch.CreateMergePatch(liveBytes, newBytes); err != nil {
				return nil, fmt.Errorf("merge patch: %w", err)
			}
		}
		out = append(out, row)
	}
	return out, nil
}

func ref(o *unstructured.Unstructured) map[string]any {
	return map[string]any{"kind": o.GetKind(), "namespace": o.GetNamespace(), "name": o.GetName()}
}

// ---- test: Argo CD's resource_customizations test files ----------------------------------------

type healthTests struct {
	Tests []struct {
		InputPath    string               `json:"inputPath"`
		HealthStatus *health.HealthStatus `json:"healthStatus"`
	} `json:"tests"`
}

type actionTests struct {
	DiscoveryTests []struct {
		InputPath string                 `json:"inputPath"`
		Result    []appv1.ResourceAction `json:"result"`
	} `json:"discoveryTests"`
	ActionTests []struct {
		Action               string            `json:"action"`
		InputPath            string            `json:"inputPath"`
		ExpectedOutputPath   string            `json:"expectedOutputPath"`
		ExpectedErrorMessage string            `json:"expectedErrorMessage"`
		Parameters           map[string]string `json:"parameters"`
	} `json:"actionTests"`
}

type tally struct{ passed, failed int }

func (t *tally) report(name string, err error) {
	if err != nil {
		t.failed++
		fmt.Printf("FAIL %s: %v\n", name, err)
		return
	}
	t.passed++
	fmt.Printf("PASS %s\n", name)
}

func readYAML(path string, into any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return yaml.Unmarshal(b, into)
}

func readObject(path string) (*unstructured.Unstructured, error) {
	m := map[string]any{}
	if err := readYAML(path, &m); err != nil {
		return nil, err
	}
	return &unstructured.Unstructured{Object: m}, nil
}

// fileSource: the scripts beside the test file (health.lua; discovery.lua and <action>/action.lua).
func fileSource(path string, openLibs bool) (*source, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return &source{script: string(b), openLibs: openLibs}, nil
}

func runTests(cm string, openLibs bool, dirs []string) error {
	if len(dirs) == 0 {
		return errors.New("give at least one DIR to search for health_test.yaml / action_test.yaml")
	}
	var cmSrc *source
	if cm != "" {
		var err error
		if cmSrc, err = newSource("", cm, openLibs); err != nil {
			return err
		}
	}
	var t tally
	for _, root := range dirs {
		err := filepath.Walk(root, func(path string, info os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			dir := filepath.Dir(path)
			switch info.Name() {
			case "health_test.yaml":
				healthFile(&t, dir, cmSrc, openLibs)
			case "action_test.yaml":
				actionFile(&t, dir, cmSrc, openLibs)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	fmt.Printf("%d passed, %d failed\n", t.passed, t.failed)
	if t.failed > 0 || t.passed == 0 {
		os.Exit(1)
	}
	return nil
}

func healthFile(t *tally, dir string, cmSrc *source, openLibs bool) {
	var spec healthTests
	if err := readYAML(filepath.Join(dir, "health_test.yaml"), &spec); err != nil {
		t.report(filepath.Join(dir, "health_test.yaml"), err)
		return
	}
	src := cmSrc
	for _, tc := range spec.Tests {
		name := filepath.Join(dir, tc.InputPath)
		if src == nil {
			var err error
			if src, err = fileSource(filepath.Join(dir, "health.lua"), openLibs); err != nil {
				t.report(name, err)
				return
			}
		}
		t.report(name, func() error {
			obj, err := readObject(name)
			if err != nil {
				return err
			}
			got, err := src.health(obj)
			if err != nil {
				return err
			}
			// assert.Equal(t, test.HealthStatus, result)
			if !reflect.DeepEqual(tc.HealthStatus, got) {
				return fmt.Errorf("health: want %s, got %s", js(tc.HealthStatus), js(got))
			}
			return nil
		}())
	}
}

func actionFile(t *tally, dir string, cmSrc *source, openLibs bool) {
	var spec actionTests
	if err := readYAML(filepath.Join(dir, "action_test.yaml"), &spec); err != nil {
		t.report(filepath.Join(dir, "action_test.yaml"), err)
		return
	}
	for _, tc := range spec.DiscoveryTests {
		name := "discovery " + filepath.Join(dir, tc.InputPath)
		t.report(name, func() error {
			src := cmSrc
			if src == nil {
				var err error
				if src, err = fileSource(filepath.Join(dir, "discovery.lua"), openLibs); err != nil {
					return err
				}
			}
			obj, err := readObject(filepath.Join(dir, tc.InputPath))
			if err != nil {
				return err
			}
			got, err := src.discovery(obj)
			if err != nil {
				return err
			}
			// Argo CD: for each result, assert.Contains(t, test.Result, result[i]) (every field).
			for _, a := range got {
				found := false
				for _, want := range tc.Result {
					if reflect.DeepEqual(want, a) {
						found = true
						break
					}
				}
				if !found {
					return fmt.Errorf("discovered action %s is not among the expected %s", js(a), js(tc.Result))
				}
			}
			// Stricter than Argo CD: an expected action that is not discovered fails too.
			if len(got) != len(tc.Result) {
				return fmt.Errorf("discovered %d actions %s, expected %d %s", len(got), js(got), len(tc.Result), js(tc.Result))
			}
			return nil
		}())
	}
	for _, tc := range spec.ActionTests {
		name := fmt.Sprintf("action %s %s", tc.Action, filepath.Join(dir, tc.InputPath))
		t.report(name, func() error {
			// Argo CD's action tests never open the standard libraries (as its API server).
			src := cmSrc
			if src == nil {
				var err error
				if src, err = fileSource(filepath.Join(dir, tc.Action, "action.lua"), false); err != nil {
					return err
				}
			}
			source, err := readObject(filepath.Join(dir, tc.InputPath))
			if err != nil {
				return err
			}
			var ps []*applicationpkg.ResourceActionParameters
			for k, v := range tc.Parameters {
				ps = append(ps, &applicationpkg.ResourceActionParameters{Name: &k, Value: &v})
			}
			impacted, err := src.action(source, tc.Action, ps)
			if tc.ExpectedErrorMessage != "" {
				if err == nil || err.Error() != tc.ExpectedErrorMessage {
					return fmt.Errorf("want error %q, got %v", tc.ExpectedErrorMessage, err)
				}
				return nil
			}
			if err != nil {
				return err
			}
			expected, err := expectedObjects(filepath.Join(dir, tc.ExpectedOutputPath))
			if err != nil {
				return err
			}
			for _, ir := range impacted {
				result := ir.UnstructuredObj
				var want *unstructured.Unstructured
				for i := range expected {
					e := expected[i]
					if e.GroupVersionKind() == result.GroupVersionKind() && e.GetName() == result.GetName() && e.GetNamespace() == result.GetNamespace() {
						want = e
						break
					}
				}
				if want == nil {
					return fmt.Errorf("%s %s/%s is not in %s", result.GetKind(), result.GetNamespace(), result.GetName(), tc.ExpectedOutputPath)
				}
				if ir.K8SOperation == argolua.PatchOperation &&
					(source.GroupVersionKind() != result.GroupVersionKind() || source.GetName() != result.GetName() || source.GetNamespace() != result.GetNamespace()) {
					return errors.New("a patch may only change the source object")
				}
				d, err := diff.Diff(context.Background(), want, result)
				if err != nil {
					return err
				}
				if d.Modified {
					return fmt.Errorf("output does not match %s:\n--- want\n%s\n--- got\n%s", tc.ExpectedOutputPath, d.PredictedLive, d.NormalizedLive)
				}
			}
			return nil
		}())
	}
}

// expectedObjects reads an expected output as Argo CD's getExpectedObjectList: a list of
// {unstructuredObj: ...} wrappers (new-style actions) or one object (old-style).
func expectedObjects(path string) ([]*unstructured.Unstructured, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if bytes.HasPrefix(b, []byte("-")) {
		var list []map[string]any
		if err := yaml.Unmarshal(b, &list); err != nil {
			return nil, err
		}
		var out []*unstructured.Unstructured
		for i, w := range list {
			m, ok := w["unstructuredObj"].(map[string]any)
			if !ok {
				return nil, fmt.Errorf("%s: item %d has no unstructuredObj", path, i)
			}
			out = append(out, &unstructured.Unstructured{Object: m})
		}
		return out, nil
	}
	o, err := readObject(path)
	if err != nil {
		return nil, err
	}
	return []*unstructured.Unstructured{o}, nil
}

func js(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

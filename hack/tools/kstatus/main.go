// Command kstatus prints what kstatus (sigs.k8s.io/cli-utils/pkg/kstatus/status) computes for
// Kubernetes objects: the library that Helm 4 `--wait`, Flux and kpt use to decide that a resource
// is reconciled.
//
//	kstatus --version    the cli-utils module it was built with
//	kstatus [FILE|-]     FILE holds YAML or JSON objects: one, several YAML documents, or a List
//	                     (as `kubectl get -o json` prints); `-` or no argument reads standard input
//
// One JSON object per input object goes to standard output, one per line:
//
//	{"kind":"AgentRun","namespace":"ns","name":"r","status":"InProgress","message":"...","conditions":[...]}
//
// Exit status: 0 when every object was computed, 2 for bad input (the message names the document and
// what is wrong with it), 1 when the library returned an error for an object.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type result struct {
	Kind       string             `json:"kind"`
	Namespace  string             `json:"namespace,omitempty"`
	Name       string             `json:"name"`
	Status     string             `json:"status"`
	Message    string             `json:"message"`
	Conditions []status.Condition `json:"conditions,omitempty"`
}

func main() {
	if len(os.Args) == 2 && os.Args[1] == "--version" {
		fmt.Println(version())
		return
	}
	if len(os.Args) > 2 || (len(os.Args) == 2 && (os.Args[1] == "-h" || os.Args[1] == "--help")) {
		fmt.Fprintln(os.Stderr, "usage: kstatus [FILE|-]  (YAML or JSON objects, several documents, or a List)")
		os.Exit(2)
	}
	var in io.Reader = os.Stdin
	source := "standard input"
	if len(os.Args) == 2 && os.Args[1] != "-" {
		f, err := os.Open(os.Args[1])
		if err != nil {
			fmt.Fprintf(os.Stderr, "kstatus: %v\n", err)
			os.Exit(2)
		}
		defer f.Close()
		in, source = f, os.Args[1]
	}
	objects, err := decode(in, source)
	if err != nil {
		fmt.Fprintf(os.Stderr, "kstatus: %v\n", err)
		os.Exit(2)
	}
	if len(objects) == 0 {
		fmt.Fprintf(os.Stderr, "kstatus: %s holds no Kubernetes object (expected YAML or JSON with apiVersion, kind and metadata.name)\n", source)
		os.Exit(2)
	}
	out := json.NewEncoder(os.Stdout)
	failed := false
	for _, u := range objects {
		res, err := status.Compute(u)
		if err != nil {
			fmt.Fprintf(os.Stderr, "kstatus: %s/%s: %v\n", u.GetKind(), u.GetName(), err)
			failed = true
			continue
		}
		if err := out.Encode(result{
			Kind:       u.GetKind(),
			Namespace:  u.GetNamespace(),
			Name:       u.GetName(),
			Status:     res.Status.String(),
			Message:    res.Message,
			Conditions: res.Conditions,
		}); err != nil {
			fmt.Fprintf(os.Stderr, "kstatus: writing the result: %v\n", err)
			os.Exit(1)
		}
	}
	if failed {
		os.Exit(1)
	}
}

// decode reads every document of a YAML or JSON stream; a List contributes its items.
func decode(in io.Reader, source string) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bufio.NewReader(in), 4096)
	var objects []*unstructured.Unstructured
	for doc := 1; ; doc++ {
		var text json.RawMessage
		if err := dec.Decode(&text); err != nil {
			if errors.Is(err, io.EOF) {
				return objects, nil
			}
			return nil, fmt.Errorf("%s, document %d: not YAML or JSON: %v", source, doc, err)
		}
		if trimmed := bytes.TrimSpace(text); len(trimmed) == 0 || string(trimmed) == "null" {
			continue // an empty document (a stray `---`)
		}
		// apimachinery's json keeps integers int64 (metadata.generation), as the API machinery does.
		var raw map[string]interface{}
		if err := utiljson.Unmarshal(text, &raw); err != nil {
			return nil, fmt.Errorf("%s, document %d: not a YAML or JSON object: %v", source, doc, err)
		}
		u := &unstructured.Unstructured{Object: raw}
		if u.IsList() || strings.HasSuffix(u.GetKind(), "List") {
			list, err := u.ToList()
			if err != nil {
				return nil, fmt.Errorf("%s, document %d: kind %s: items: %v", source, doc, u.GetKind(), err)
			}
			for i := range list.Items {
				item := &list.Items[i]
				if err := check(item); err != nil {
					return nil, fmt.Errorf("%s, document %d, items[%d]: %v", source, doc, i, err)
				}
				objects = append(objects, item)
			}
			continue
		}
		if err := check(u); err != nil {
			return nil, fmt.Errorf("%s, document %d: %v", source, doc, err)
		}
		objects = append(objects, u)
	}
}

func check(u *unstructured.Unstructured) error {
	switch {
	case u.GetAPIVersion() == "":
		return errors.New("apiVersion is missing: give each object its apiVersion (e.g. agenttree.io/v1alpha1)")
	case u.GetKind() == "":
		return errors.New("kind is missing: give each object its kind (e.g. AgentRun)")
	case u.GetName() == "":
		return fmt.Errorf("%s: metadata.name is missing: give each object a name", u.GetKind())
	}
	return nil
}

// version names the cli-utils module compiled in, so a cached binary says what it computes with.
func version() string {
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range info.Deps {
			if dep.Path == "sigs.k8s.io/cli-utils" {
				return "kstatus (" + dep.Path + " " + dep.Version + ")"
			}
		}
	}
	return "kstatus (sigs.k8s.io/cli-utils unknown)"
}

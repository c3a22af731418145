// helmrender renders a Helm chart the way `helm template` does, for CI machines without Helm:
// Go's text/template with the sprig functions and Helm's own (include, tpl, required, fail,
// toYaml, fromYaml, toJson), values merged from the chart's values.yaml and -f files, and
// validated against values.schema.json first.
//
//	helmrender -chart helm/vitq [-f extra.yaml]... [-name vitq] [-namespace default] [-notes]
//
// Prints the manifests (one "# Source:" document per template) or, with -notes, NOTES.txt.
// Exits 1 with the reason on a schema violation or a template error.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/template"

	"github.com/Masterminds/sprig"
	"github.com/xeipuuv/gojsonschema"
	yamlv2 "gopkg.in/yaml.v2"
	yaml "gopkg.in/yaml.v3"
)

type valueFiles []string

func (v *valueFiles) String() string     { return strings.Join(*v, ",") }
func (v *valueFiles) Set(s string) error { *v = append(*v, s); return nil }

// normalize turns every number into float64 and every map into map[string]interface{}, as Helm
// does (it reads values through JSON).
func normalize(v interface{}) interface{} {
	switch t := v.(type) {
	case map[string]interface{}:
		for k, e := range t {
			t[k] = normalize(e)
		}
		return t
	case []interface{}:
		for i, e := range t {
			t[i] = normalize(e)
		}
		return t
	case int:
		return float64(t)
	case int64:
		return float64(t)
	default:
		return v
	}
}

func readYAML(path string) (map[string]interface{}, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	out := map[string]interface{}{}
	if err := yaml.Unmarshal(data, &out); err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	return normalize(out).(map[string]interface{}), nil
}

// merge overlays src on dst: maps merge key by key, anything else replaces.
func merge(dst, src map[string]interface{}) map[string]interface{} {
	for k, v := range src {
		if sm, ok := v.(map[string]interface{}); ok {
			if dm, ok := dst[k].(map[string]interface{}); ok {
				dst[k] = merge(dm, sm)
				continue
			}
		}
		dst[k] = v
	}
	return dst
}

func toYAML(v interface{}) string {
	out, err := yamlv2.Marshal(v)
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(string(out), "\n")
}

func validate(chart string, values map[string]interface{}) error {
	schema := filepath.Join(chart, "values.schema.json")
	if _, err := os.Stat(schema); err != nil {
		return nil
	}
	abs, _ := filepath.Abs(schema)
	result, err := gojsonschema.Validate(gojsonschema.NewReferenceLoader("file://"+abs),
		gojsonschema.NewGoLoader(values))
	if err != nil {
		return err
	}
	if !result.Valid() {
		var msgs []string
		for _, e := range result.Errors() {
			msgs = append(msgs, "- "+e.String())
		}
		return errors.New("values don't meet the specifications of the schema:\n" + strings.Join(msgs, "\n"))
	}
	return nil
}

func main() {
	chart := flag.String("chart", "", "chart folder")
	name := flag.String("name", "vitq", "release name")
	namespace := flag.String("namespace", "default", "release namespace")
	notes := flag.Bool("notes", false, "print NOTES.txt instead of the manifests")
	var files valueFiles
	flag.Var(&files, "f", "values file (repeatable)")
	flag.Parse()
	if err := run(*chart, *name, *namespace, files, *notes); err != nil {
		fmt.Fprintln(os.Stderr, "helmrender: error:", err)
		os.Exit(1)
	}
}

func run(chart, name, namespace string, files []string, notes bool) error {
	meta, err := readYAML(filepath.Join(chart, "Chart.yaml"))
	if err != nil {
		return err
	}
	values, err := readYAML(filepath.Join(chart, "values.yaml"))
	if err != nil {
		return err
	}
	for _, f := range files {
		extra, err := readYAML(f)
		if err != nil {
			return err
		}
		values = merge(values, extra)
	}
	if err := validate(chart, values); err != nil {
		return err
	}
	chartName := fmt.Sprint(meta["name"])
	base := chartName + "/templates"
	root := template.New("chart")
	funcs := sprig.TxtFuncMap()
	funcs["toYaml"] = toYAML
	funcs["fromYaml"] = func(s string) map[string]interface{} {
		m := map[string]interface{}{}
		_ = yaml.Unmarshal([]byte(s), &m)
		return m
	}
	funcs["include"] = func(n string, data interface{}) (string, error) {
		var buf bytes.Buffer
		err := root.ExecuteTemplate(&buf, n, data)
		return buf.String(), err
	}
	funcs["tpl"] = func(text string, data interface{}) (string, error) {
		t, err := root.Clone()
		if err != nil {
			return "", err
		}
		t, err = t.New("tpl").Parse(text)
		if err != nil {
			return "", err
		}
		var buf bytes.Buffer
		err = t.Execute(&buf, data)
		return buf.String(), err
	}
	funcs["required"] = func(msg string, v interface{}) (interface{}, error) {
		if v == nil || v == "" {
			return nil, errors.New(msg)
		}
		return v, nil
	}
	funcs["fail"] = func(msg string) (string, error) { return "", errors.New(msg) }
	root.Funcs(funcs).Option("missingkey=zero")

	entries, err := os.ReadDir(filepath.Join(chart, "templates"))
	if err != nil {
		return err
	}
	var names []string
	for _, e := range entries {
		text, err := os.ReadFile(filepath.Join(chart, "templates", e.Name()))
		if err != nil {
			return err
		}
		n := base + "/" + e.Name()
		if _, err := root.New(n).Parse(string(text)); err != nil {
			return err
		}
		names = append(names, e.Name())
	}
	sort.Strings(names)
	data := map[string]interface{}{
		"Values":  values,
		"Chart":   map[string]interface{}{"Name": chartName, "Version": meta["version"], "AppVersion": meta["appVersion"]},
		"Release": map[string]interface{}{"Name": name, "Namespace": namespace, "Service": "Helm", "IsInstall": true},
	}
	var out strings.Builder
	for _, n := range names {
		isNotes := n == "NOTES.txt"
		if strings.HasPrefix(n, "_") || isNotes != notes {
			continue
		}
		data["Template"] = map[string]interface{}{"BasePath": base, "Name": base + "/" + n}
		var buf bytes.Buffer
		if err := root.ExecuteTemplate(&buf, base+"/"+n, data); err != nil {
			return err
		}
		text := strings.ReplaceAll(buf.String(), "<no value>", "")
		if strings.TrimSpace(text) == "" {
			continue
		}
		if notes {
			out.WriteString(text)
		} else {
			fmt.Fprintf(&out, "---\n# Source: %s/%s\n%s\n", base, n, strings.TrimSpace(text))
		}
	}
	fmt.Print(out.String())
	return nil
}

// k8scheck checks Kubernetes manifests against the API's own Go types,
// offline: every document must decode strictly (no unknown or misspelled
// field, no wrong type) into the type its apiVersion and kind name, and
// pass the checks the API server would make first (a DaemonSet's selector
// matches its pod labels, every container has an image). An argument is a
// YAML file or a kustomization directory, built with kustomize's library
// first, as `kubectl apply -k` would.
//
// Usage: k8scheck FILE_OR_DIR...
package main

import (
	"bytes"
	"fmt"
	"os"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

func newObject(apiVersion, kind string) (any, error) {
	switch apiVersion + "/" + kind {
	case "v1/ConfigMap":
		return &corev1.ConfigMap{}, nil
	case "v1/Secret":
		return &corev1.Secret{}, nil
	case "v1/ServiceAccount":
		return &corev1.ServiceAccount{}, nil
	case "v1/Namespace":
		return &corev1.Namespace{}, nil
	case "apps/v1/DaemonSet":
		return &appsv1.DaemonSet{}, nil
	case "rbac.authorization.k8s.io/v1/ClusterRole":
		return &rbacv1.ClusterRole{}, nil
	case "rbac.authorization.k8s.io/v1/ClusterRoleBinding":
		return &rbacv1.ClusterRoleBinding{}, nil
	}
	return nil, fmt.Errorf("%s %s: not a kind this checker knows", apiVersion, kind)
}

func check(source string, doc []byte) error {
	var meta metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &meta); err != nil {
		return fmt.Errorf("%s: %w", source, err)
	}
	if meta.APIVersion == "" && meta.Kind == "" {
		return nil // an empty document
	}
	obj, err := newObject(meta.APIVersion, meta.Kind)
	if err != nil {
		return fmt.Errorf("%s: %w", source, err)
	}
	// Decoded as the API server decodes: field names match exactly.
	data, err := yaml.YAMLToJSON(doc)
	if err != nil {
		return fmt.Errorf("%s %s: %w", source, meta.Kind, err)
	}
	strict, err := sigsjson.UnmarshalStrict(data, obj, sigsjson.DisallowDuplicateFields, sigsjson.DisallowUnknownFields)
	if err != nil {
		return fmt.Errorf("%s %s: %w", source, meta.Kind, err)
	}
	if len(strict) > 0 {
		return fmt.Errorf("%s %s: %v", source, meta.Kind, strict)
	}
	if ds, ok := obj.(*appsv1.DaemonSet); ok {
		selector, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector)
		if err != nil {
			return fmt.Errorf("%s DaemonSet %s: selector: %w", source, ds.Name, err)
		}
		if !selector.Matches(labels.Set(ds.Spec.Template.Labels)) {
			return fmt.Errorf("%s DaemonSet %s: selector does not match the pod labels", source, ds.Name)
		}
		for _, c := range ds.Spec.Template.Spec.Containers {
			if c.Image == "" {
				return fmt.Errorf("%s DaemonSet %s: container %s has no image", source, ds.Name, c.Name)
			}
		}
	}
	fmt.Printf("%s: %s %s ok\n", source, meta.Kind, nameOf(obj))
	return nil
}

func nameOf(obj any) string {
	if o, ok := obj.(interface{ GetName() string }); ok {
		return o.GetName()
	}
	return ""
}

func documents(path string) ([]byte, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !info.IsDir() {
		return os.ReadFile(path)
	}
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	resources, err := k.Run(filesys.MakeFsOnDisk(), path)
	if err != nil {
		return nil, fmt.Errorf("kustomize %s: %w", path, err)
	}
	return resources.AsYaml()
}

func main() {
	failed := false
	for _, path := range os.Args[1:] {
		text, err := documents(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			failed = true
			continue
		}
		for _, doc := range bytes.Split(text, []byte("\n---")) {
			if strings.TrimSpace(string(doc)) == "" {
				continue
			}
			if err := check(path, doc); err != nil {
				fmt.Fprintln(os.Stderr, err)
				failed = true
			}
		}
	}
	if failed || len(os.Args) < 2 {
		os.Exit(1)
	}
}

package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/liggitt/tabwriter"
	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/cli-runtime/pkg/printers"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	"sigs.k8s.io/yaml"
)

// Output formats of -o.
const (
	outputTable = "table"
	outputJSON  = "json"
	outputYAML  = "yaml"
)

// outputFlag is the -o/--output flag of a command.
type outputFlag struct{ format string }

// addOutputFlag adds -o table|json|yaml (default table) to cmd.
func addOutputFlag(cmd *cobra.Command, o *outputFlag) {
	cmd.Flags().StringVarP(&o.format, "output", "o", outputTable, "Output format: table, json or yaml")
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{outputTable, outputJSON, outputYAML}, cobra.ShellCompDirectiveNoFileComp))
}

// validate refuses a format other than table, json and yaml ("" is table).
func (o *outputFlag) validate() error {
	switch o.format {
	case "", outputTable, outputJSON, outputYAML:
		return nil
	}
	return userError(fmt.Sprintf("unknown output format %q", o.format), "use -o table, -o json or -o yaml")
}

// structured reports whether the output is json or yaml rather than a table.
func (o *outputFlag) structured() bool { return o.format == outputJSON || o.format == outputYAML }

// printObject prints obj as JSON or YAML with kubectl's printers, with its apiVersion
// and kind set and without managedFields (as kubectl get does by default). Only objects
// that hold no Secret data may be passed: the plugin never prints a Secret this way.
func printObject(w io.Writer, format string, obj runtime.Object) error {
	obj = obj.DeepCopyObject()
	if err := setGVK(obj); err != nil {
		return err
	}
	if list, ok := obj.(*metav1.List); ok {
		for i := range list.Items {
			if o, ok := list.Items[i].Object.(client.Object); ok {
				o.SetManagedFields(nil)
			}
		}
	}
	if o, ok := obj.(client.Object); ok {
		o.SetManagedFields(nil)
	}
	var p printers.ResourcePrinter = &printers.JSONPrinter{}
	if format == outputYAML {
		p = &printers.YAMLPrinter{}
	}
	if err := p.PrintObj(obj, w); err != nil {
		return userError("cannot print the result: "+err.Error(), "")
	}
	return nil
}

// printList prints objs as a kubectl List (`kubectl get -o json` prints the same).
func printList[T any, PT interface {
	*T
	client.Object
}](w io.Writer, format string, items []T) error {
	list := &metav1.List{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "List"}, Items: []runtime.RawExtension{}}
	for i := range items {
		obj := PT(&items[i]).DeepCopyObject().(client.Object)
		if err := setGVK(obj); err != nil {
			return err
		}
		obj.SetManagedFields(nil)
		list.Items = append(list.Items, runtime.RawExtension{Object: obj})
	}
	return printObject(w, format, list)
}

func setGVK(obj runtime.Object) error {
	if _, ok := obj.(*metav1.List); ok {
		return nil
	}
	if !obj.GetObjectKind().GroupVersionKind().Empty() {
		return nil
	}
	gvk, err := apiutil.GVKForObject(obj, scheme)
	if err != nil {
		return userError("cannot print the result: "+err.Error(), "")
	}
	obj.GetObjectKind().SetGroupVersionKind(schema.GroupVersionKind(gvk))
	return nil
}

// newTable returns kubectl's tab writer for a table; call Flush when done.
func newTable(w io.Writer) *tabwriter.Writer { return printers.GetNewTabWriter(w) }

// row writes one tab-separated row of a table; its cells are made printable.
func row(w io.Writer, cells ...string) {
	safe := make([]string, len(cells))
	for i, c := range cells {
		safe[i] = printable(c)
	}
	fmt.Fprintln(w, strings.Join(safe, "\t"))
}

// printable returns s with every control character (C0 including tab and newline, DEL,
// C1) and every bidirectional override or isolate escaped as \xNN or \uNNNN, so that text
// from the cluster (a display name, a condition or event message, a token server's
// answer) can neither drive the terminal with escape sequences, nor reorder what is shown,
// nor break a table's rows and columns. Invalid UTF-8 is shown as \xNN too.
func printable(s string) string {
	if utf8.ValidString(s) && strings.IndexFunc(s, unprintable) < 0 {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, "\\x%02x", s[i])
		case unprintable(r) && r < 0x100:
			fmt.Fprintf(&b, "\\x%02x", r)
		case unprintable(r):
			fmt.Fprintf(&b, "\\u%04x", r)
		default:
			b.WriteRune(r)
		}
		i += size
	}
	return b.String()
}

// unprintable reports whether r must not reach a terminal as it is.
func unprintable(r rune) bool {
	return unicode.IsControl(r) ||
		(r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069) || r == 0x200e || r == 0x200f || r == 0x061c
}

// age prints how long ago t was as kubectl does ("5m", "3d"), or "<unknown>" for a zero time.
func age(t metav1.Time, now time.Time) string {
	if t.IsZero() {
		return "<unknown>"
	}
	return duration.HumanDuration(now.Sub(t.Time))
}

// ago prints "5m ago", or never for a nil or zero time.
func ago(t *metav1.Time, now time.Time) string {
	if t == nil || t.IsZero() {
		return "never"
	}
	return duration.HumanDuration(now.Sub(t.Time)) + " ago"
}

// in prints "in 5m" for a time ahead, "5m ago" for one behind.
func until(t time.Time, now time.Time) string {
	if t.After(now) {
		return "in " + duration.HumanDuration(t.Sub(now))
	}
	return duration.HumanDuration(now.Sub(t)) + " ago"
}

// orNone returns s, or "<none>" when it is empty (kubectl's placeholder).
func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}

// timestamp prints t in RFC 3339, UTC.
func timestamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// printValue prints a plain Go value (not a Kubernetes object) as indented JSON or YAML.
func printValue(w io.Writer, format string, v any) error {
	var out []byte
	var err error
	if format == outputYAML {
		out, err = yaml.Marshal(v)
	} else {
		out, err = json.MarshalIndent(v, "", "    ")
		out = append(out, '\n')
	}
	if err != nil {
		return userError("cannot print the result: "+err.Error(), "")
	}
	_, err = w.Write(out)
	return err
}

// Package argocd runs keysmith's Argo CD health checks the way Argo CD runs them, so tests
// can prove what Argo CD shows for a keysmith object.
//
// The checks live next to this file in the layout of Argo CD's resource_customizations:
// <group>/<kind>/health.lua, with health_test.yaml and testdata/ beside it. Install them in
// Argo CD as docs/gitops.md shows; this package only runs them, with
// github.com/yuin/gopher-lua, the interpreter Argo CD embeds, under the same rules: the
// object as the global obj, only the package, base and table libraries opened, a one-second
// limit, and the returned table read as {status, message}.
package argocd

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"time"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// Health statuses a health check may return, as Argo CD defines them.
const (
	// StatusHealthy: the resource is as declared.
	StatusHealthy = "Healthy"
	// StatusProgressing: not healthy yet, but can still become healthy.
	StatusProgressing = "Progressing"
	// StatusDegraded: failed; it will not become healthy without a change.
	StatusDegraded = "Degraded"
	// StatusSuspended: suspended or paused on purpose.
	StatusSuspended = "Suspended"
	// StatusMissing: not in the cluster.
	StatusMissing = "Missing"
	// StatusUnknown: the health could not be assessed.
	StatusUnknown = "Unknown"
)

// invalidStatusMessage is the message Argo CD shows when a script returns a status it does
// not know.
const invalidStatusMessage = "Lua returned an invalid health status"

// scriptTimeout is how long Argo CD lets a health script run.
const scriptTimeout = time.Second

//go:embed */*/health.lua
var scripts embed.FS

// HealthStatus is what a health check returns, as Argo CD reads it.
type HealthStatus struct {
	// Status is one of the Status* constants.
	Status string `json:"status,omitempty"`
	// Message explains the status to a person.
	Message string `json:"message,omitempty"`
}

// ErrNoHealthCheck is returned by Health for an object whose kind has no health check here.
var ErrNoHealthCheck = errors.New("no Argo CD health check for this kind")

// Script returns the health check keysmith ships for the group and kind.
func Script(group, kind string) (string, error) {
	b, err := fs.ReadFile(scripts, path.Join(group, kind, "health.lua"))
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("%s/%s: %w", group, kind, ErrNoHealthCheck)
	}
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// Health runs the health check keysmith ships for obj's kind on obj.
func Health(obj *unstructured.Unstructured) (HealthStatus, error) {
	gvk := obj.GroupVersionKind()
	script, err := Script(gvk.Group, gvk.Kind)
	if err != nil {
		return HealthStatus{}, err
	}
	return RunHealthScript(script, obj)
}

// RunHealthScript runs a health script on obj as Argo CD's application controller does.
// A script that returns nothing (or an empty table) yields the zero HealthStatus; one that
// returns an unknown status yields StatusUnknown, as in Argo CD.
func RunHealthScript(script string, obj *unstructured.Unstructured) (HealthStatus, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	// Argo CD opens these libraries only (and a reduced os library with time and date),
	// so a script that calls string.* or math.* fails there as it fails here.
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
	} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			return HealthStatus{}, fmt.Errorf("opening the Lua %s library: %w", lib.name, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), scriptTimeout)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", toLua(l, obj.Object))

	if err := l.DoString(script); err != nil {
		return HealthStatus{}, err
	}
	return healthFromLua(l.Get(-1))
}

// healthFromLua reads the value a health script returned.
func healthFromLua(v lua.LValue) (HealthStatus, error) {
	if v.Type() == lua.LTNil {
		return HealthStatus{}, nil
	}
	tbl, ok := v.(*lua.LTable)
	if !ok {
		return HealthStatus{}, fmt.Errorf("expect table output from Lua script, not %s", v.Type())
	}
	var hs HealthStatus
	empty := true
	var fieldErr error
	tbl.ForEach(func(k, val lua.LValue) {
		empty = false
		var dst *string
		switch k.String() {
		case "status":
			dst = &hs.Status
		case "message":
			dst = &hs.Message
		default:
			return
		}
		s, ok := val.(lua.LString)
		if !ok {
			fieldErr = fmt.Errorf("health field %s is a Lua %s, not a string", k, val.Type())
			return
		}
		*dst = string(s)
	})
	if empty {
		return HealthStatus{}, nil
	}
	if fieldErr != nil {
		return HealthStatus{}, fieldErr
	}
	switch hs.Status {
	case StatusHealthy, StatusProgressing, StatusDegraded, StatusSuspended, StatusMissing, StatusUnknown:
		return hs, nil
	}
	return HealthStatus{Status: StatusUnknown, Message: invalidStatusMessage}, nil
}

// toLua converts a value of an unstructured object the way Argo CD does: JSON arrays
// become sequences (1-based, for ipairs), JSON objects become tables keyed by string,
// numbers become Lua numbers, and null or anything else becomes nil.
func toLua(l *lua.LState, value any) lua.LValue {
	switch v := value.(type) {
	case bool:
		return lua.LBool(v)
	case string:
		return lua.LString(v)
	case float64:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case int32:
		return lua.LNumber(v)
	case int:
		return lua.LNumber(v)
	case json.Number:
		return lua.LString(v)
	case []any:
		arr := l.CreateTable(len(v), 0)
		for _, item := range v {
			arr.Append(toLua(l, item))
		}
		return arr
	case map[string]any:
		tbl := l.CreateTable(0, len(v))
		for key, item := range v {
			tbl.RawSetH(lua.LString(key), toLua(l, item))
		}
		return tbl
	}
	return lua.LNil
}

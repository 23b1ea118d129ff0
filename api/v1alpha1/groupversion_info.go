// Package v1alpha1 contains the keysmith API: the APIDefinition catalog of protected APIs
// and the APICredential resource that platform teams declare to obtain machine credentials.
//
// +kubebuilder:object:generate=true
// +groupName=iam.keysmith.dev
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of the keysmith API.
	GroupVersion = schema.GroupVersion{Group: "iam.keysmith.dev", Version: "v1alpha1"}

	// SchemeBuilder registers the keysmith types with a runtime.Scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the keysmith types to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

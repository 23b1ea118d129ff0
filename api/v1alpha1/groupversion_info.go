// Package v1alpha1 contains the keysmith API: the APIDefinition catalog of protected APIs
// and the APICredential resource that platform teams declare to obtain machine credentials.
//
// +kubebuilder:object:generate=true
// +groupName=iam.keysmith.dev
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the group and version of the keysmith API.
	GroupVersion = schema.GroupVersion{Group: "iam.keysmith.dev", Version: "v1alpha1"}

	// SchemeBuilder registers the keysmith types with a runtime.Scheme. It is
	// apimachinery's, not controller-runtime's deprecated scheme.Builder: an API package
	// depends on k8s.io/apimachinery only.
	SchemeBuilder = runtime.NewSchemeBuilder(func(s *runtime.Scheme) error {
		metav1.AddToGroupVersion(s, GroupVersion)
		return nil
	})

	// AddToScheme adds the keysmith types to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

// register adds objects, keysmith kinds, to what SchemeBuilder registers in GroupVersion
// (each kind's file calls it from its init).
func register(objects ...runtime.Object) {
	SchemeBuilder.Register(func(s *runtime.Scheme) error {
		s.AddKnownTypes(GroupVersion, objects...)
		return nil
	})
}

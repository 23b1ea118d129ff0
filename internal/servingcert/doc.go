// Package servingcert provisions and rotates the serving certificates of the manager's
// admission webhooks and of the shared token server, and keeps the webhook
// configuration's caBundle current, so that keysmith installs without cert-manager.
package servingcert

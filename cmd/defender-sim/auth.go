package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	simulator "github.com/sectelemetry/telegraf-defender/internal/sim"
)

// authFlags are the flags of the authentication modes beyond the client
// secret.
type authFlags struct {
	caFile                  string
	clientCertificateFile   string
	registerCertificate     string
	managedIdentityHeader   string
	managedIdentityClientID string
	federatedTokenFile      string
	federatedIssuer         string
	federatedSubject        string
	federatedLifetime       time.Duration
}

// configure applies the flags to cfg and returns the server's TLS
// configuration when -tls-ca-file asks for https. Keys are made at start
// and live only in memory and in the files the flags name.
func (a *authFlags) configure(cfg *simulator.Config) (*tls.Config, error) {
	var ca *simulator.TestCA
	if a.caFile != "" || a.clientCertificateFile != "" {
		var err error
		if ca, err = simulator.NewTestCA(); err != nil {
			return nil, err
		}
	}
	if a.clientCertificateFile != "" {
		cert, key, err := ca.Issue(&x509.Certificate{Subject: pkix.Name{CommonName: "defender-sim client"}})
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(a.clientCertificateFile, simulator.CertificatePEM(cert, key), 0o600); err != nil {
			return nil, err
		}
		cfg.ClientCertificates = append(cfg.ClientCertificates, cert)
	}
	if a.registerCertificate != "" {
		cert, err := readCertificate(a.registerCertificate)
		if err != nil {
			return nil, fmt.Errorf("-register-certificate: %w", err)
		}
		cfg.ClientCertificates = append(cfg.ClientCertificates, cert)
	}
	if a.managedIdentityHeader != "" {
		cfg.ManagedIdentity = &simulator.ManagedIdentity{Header: a.managedIdentityHeader, SystemAssigned: true}
		if a.managedIdentityClientID != "" {
			cfg.ManagedIdentity.UserAssigned = []simulator.UserAssignedIdentity{{ClientID: a.managedIdentityClientID}}
		}
	} else if a.managedIdentityClientID != "" {
		return nil, errors.New("-managed-identity-client-id needs -managed-identity-header")
	}
	if a.federatedTokenFile != "" {
		cfg.FederatedCredentials = append(cfg.FederatedCredentials, simulator.FederatedCredential{Issuer: a.federatedIssuer, Subject: a.federatedSubject})
	}
	if a.caFile == "" {
		return nil, nil
	}
	if err := os.WriteFile(a.caFile, ca.CertPEM(), 0o600); err != nil {
		return nil, err
	}
	return ca.ServerTLS()
}

func readCertificate(path string) (*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	for {
		var block *pem.Block
		if block, data = pem.Decode(data); block == nil {
			return nil, fmt.Errorf("%s holds no CERTIFICATE block", path)
		}
		if block.Type == "CERTIFICATE" {
			return x509.ParseCertificate(block.Bytes)
		}
	}
}

// writeFederatedToken replaces the token file at once, as the kubelet
// does, so that a reader never sees half a token.
func (a *authFlags) writeFederatedToken(sim *simulator.Server) error {
	now := time.Now()
	token := sim.FederatedToken(a.federatedIssuer, a.federatedSubject, now, now.Add(a.federatedLifetime))
	tmp := filepath.Join(filepath.Dir(a.federatedTokenFile), "."+filepath.Base(a.federatedTokenFile)+".tmp")
	if err := os.WriteFile(tmp, []byte(token), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, a.federatedTokenFile)
}

func (a *authFlags) renewFederatedToken(ctx context.Context, sim *simulator.Server) {
	ticker := time.NewTicker(a.federatedLifetime / 2)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			if err := a.writeFederatedToken(sim); err != nil {
				fmt.Fprintln(os.Stderr, "defender-sim: renewing the federated token:", err)
			}
		}
	}
}

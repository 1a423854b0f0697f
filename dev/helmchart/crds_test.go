package helmchart

// crds are the cert-manager and Gateway API kinds the chart's profiles
// create, cut down to what a server-side dry run can check without the
// projects' own manifests (not vendored here): group, version, kind,
// scope, and the fields each project's schema requires, with their types.
// The rest of each spec is kept as given.
const crds = `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: certificates.cert-manager.io
spec:
  group: cert-manager.io
  names: {kind: Certificate, listKind: CertificateList, plural: certificates, singular: certificate}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        required: [spec]
        properties:
          spec:
            type: object
            required: [secretName, issuerRef]
            x-kubernetes-preserve-unknown-fields: true
            properties:
              secretName: {type: string}
              commonName: {type: string}
              dnsNames: {type: array, items: {type: string}}
              isCA: {type: boolean}
              duration: {type: string}
              renewBefore: {type: string}
              usages:
                type: array
                items:
                  type: string
                  enum: [signing, digital signature, content commitment, key encipherment, key agreement, data encipherment,
                         cert sign, crl sign, encipher only, decipher only, any, server auth, client auth, code signing,
                         email protection, s/mime, ipsec end system, ipsec tunnel, ipsec user, timestamping, ocsp signing,
                         microsoft sgc, netscape sgc]
              privateKey:
                type: object
                properties:
                  algorithm: {type: string, enum: [RSA, ECDSA, Ed25519]}
                  size: {type: integer}
                  rotationPolicy: {type: string, enum: [Never, Always]}
              issuerRef:
                type: object
                required: [name]
                properties:
                  name: {type: string}
                  kind: {type: string}
                  group: {type: string}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: issuers.cert-manager.io
spec:
  group: cert-manager.io
  names: {kind: Issuer, listKind: IssuerList, plural: issuers, singular: issuer}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        required: [spec]
        properties:
          spec:
            type: object
            x-kubernetes-preserve-unknown-fields: true
            properties:
              selfSigned: {type: object, x-kubernetes-preserve-unknown-fields: true}
              ca:
                type: object
                required: [secretName]
                properties:
                  secretName: {type: string}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: tlsroutes.gateway.networking.k8s.io
  annotations:
    # *.k8s.io groups need it; Gateway API's own CRDs carry one.
    api-approved.kubernetes.io: https://github.com/kubernetes-sigs/gateway-api
spec:
  group: gateway.networking.k8s.io
  names: {kind: TLSRoute, listKind: TLSRouteList, plural: tlsroutes, singular: tlsroute}
  scope: Namespaced
  versions:
  - name: v1alpha2
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        required: [spec]
        properties:
          spec:
            type: object
            required: [rules]
            properties:
              parentRefs:
                type: array
                maxItems: 32
                items:
                  type: object
                  required: [name]
                  properties:
                    group: {type: string}
                    kind: {type: string}
                    name: {type: string}
                    namespace: {type: string}
                    sectionName: {type: string}
                    port: {type: integer}
              hostnames:
                type: array
                maxItems: 16
                items: {type: string}
              rules:
                type: array
                minItems: 1
                maxItems: 16
                items:
                  type: object
                  properties:
                    name: {type: string}
                    backendRefs:
                      type: array
                      minItems: 1
                      maxItems: 16
                      items:
                        type: object
                        required: [name]
                        properties:
                          group: {type: string}
                          kind: {type: string}
                          name: {type: string}
                          namespace: {type: string}
                          port: {type: integer}
                          weight: {type: integer}
`

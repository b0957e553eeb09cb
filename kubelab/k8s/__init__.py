"""Kubernetes object semantics, pure, shared by every layer of kubelab.

* ``selectors``: label selectors (parse, match);
* ``jsonpath``: kubectl's jsonpath subset;
* ``patch``: JSON patch, JSON merge patch and strategic merge patch;
* ``objects``: reading partial objects safely;
* ``workloads``: apply order and ``kubectl rollout status``'s rules;
* ``assertion``: partial object trees matched as Chainsaw's assert does (``assert`` checks);
* ``data``: copying and comparing JSON data, the API's timestamps.

The bottom of kubelab's layers: the cluster code, the sandbox and the checks build on it,
and it imports none of them.
"""

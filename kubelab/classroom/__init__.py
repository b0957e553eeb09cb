"""A class on one cluster: the roster, each student's namespace, access and kubeconfig
(``access``, ``service``), grading everybody at once (``grade``) and the reports
(``model``, ``report``). See docs/grading.md."""

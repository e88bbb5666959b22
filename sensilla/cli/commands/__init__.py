"""One module per top-level command. Each defines ``register(subparsers)``, which adds
its parser and sets ``handler`` (a callable taking the parsed args and returning an
exit code). Modules import heavy dependencies inside their handlers, so that
`sensilla --help` stays fast."""

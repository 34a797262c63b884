"""The one error type the plugin raises for bad input: it names the problem and the fix."""


class ConfigError(ValueError):
    """A configuration or input problem, with the fix in the message."""

    def __init__(self, problem: str, fix: str):
        super().__init__(f"{problem}. Fix: {fix}.")
        self.problem = problem
        self.fix = fix

    def __reduce__(self):
        """Picklable (it crosses process boundaries: spawned bench runs, torchrun workers)."""
        return type(self), (self.problem, self.fix)

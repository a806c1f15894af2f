"""The foundation every layer imports: settings and logging. It imports no other package of ours."""

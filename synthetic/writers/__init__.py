"""One module per agency format; each renders a family's :class:`~synthetic.story.Story` into its files."""

"""What guests do: access-batch generators, page-content models and trace readers."""

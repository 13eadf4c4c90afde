"""Analysis: complexity, layer responses, gradient norms, plots, reports."""

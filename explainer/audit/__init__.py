"""Dataset audits: classify, explain and measure a folder of images; an HTML report."""

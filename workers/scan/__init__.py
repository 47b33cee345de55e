"""Drive scans: volume identity, the walk and reconciliation with the catalog."""

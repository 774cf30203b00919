"""Labs: specs, flows and expectations of `labkit run`."""

"""Which requests: the labels a request is counted under (route, method, client, a header), for
counts by series beside the total."""
